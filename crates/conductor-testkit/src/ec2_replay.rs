//! `Ec2Replay`: a local HTTP endpoint that answers EC2 `DescribeInstances`
//! with pages of real EC2 XML (`reservationSet`, `nextToken`) over any number
//! of generated instances, honouring the filters Conductor sends (`tag:Name`
//! prefixes, `tag-key`, `tag:<key>` values, `instance-state-name`),
//! `MaxResults` and an optional fixed latency per call. moto is too slow for
//! inventories of tens of thousands and does not paginate; this is for those.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One instance the endpoint serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayInstance {
    /// Instance id.
    pub id: String,
    /// Availability zone.
    pub zone: String,
    /// EC2 state name.
    pub state: String,
    /// Tags (Name included).
    pub tags: BTreeMap<String, String>,
}

impl ReplayInstance {
    /// `n` running instances of 500 made-up services in us-east-1a, named
    /// `svc<k>-node<i>.us-east-1a.test.example.com`; every tenth also carries
    /// conductor tags.
    pub fn generate(n: usize) -> Vec<Self> {
        (0..n)
            .map(|i| {
                let mut tags = BTreeMap::from([(
                    "Name".to_string(),
                    format!("svc{:03}-node{i:06}.us-east-1a.test.example.com", i % 500),
                )]);
                if i % 10 == 0 {
                    tags.insert("conductor:env".into(), "test".into());
                    tags.insert("conductor:group".into(), format!("svc{:03}", i % 500));
                    tags.insert("conductor:cpid".into(), format!("{}1795580170", 1000 + i));
                }
                Self {
                    id: format!("i-{i:017x}"),
                    zone: "us-east-1a".into(),
                    state: "running".into(),
                    tags,
                }
            })
            .collect()
    }
}

/// A running endpoint; stopped on drop.
#[derive(Debug)]
pub struct Ec2Replay {
    port: u16,
    calls: Arc<AtomicUsize>,
    busy_us: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Ec2Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    instances: Vec<ReplayInstance>,
    default_page: usize,
    latency: Duration,
    calls: Arc<AtomicUsize>,
    busy_us: Arc<AtomicUsize>,
}

impl Ec2Replay {
    /// Serves `instances` on a free 127.0.0.1 port; pages hold at most
    /// `MaxResults` or `default_page` instances; each call waits `latency`.
    pub async fn start(
        instances: Vec<ReplayInstance>,
        default_page: usize,
        latency: Duration,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let calls = Arc::new(AtomicUsize::new(0));
        let busy_us = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            instances,
            default_page: default_page.max(1),
            latency,
            calls: calls.clone(),
            busy_us: busy_us.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, shared).await;
                });
            }
        });
        Self {
            port,
            calls,
            busy_us,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Time spent filtering and serialising answers so far (the emulator's
    /// own share of a client's wall time).
    pub fn busy(&self) -> Duration {
        Duration::from_micros(self.busy_us.load(Ordering::Relaxed) as u64)
    }

    /// DescribeInstances calls (pages) answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).await?;
        let form = parse_form(&String::from_utf8_lossy(&body));
        shared.calls.fetch_add(1, Ordering::Relaxed);
        if !shared.latency.is_zero() {
            tokio::time::sleep(shared.latency).await;
        }
        let started = std::time::Instant::now();
        let (status, xml) = match form.get("Action").map(String::as_str) {
            Some("DescribeInstances") => ("200 OK", describe(&shared, &form)),
            other => (
                "400 Bad Request",
                error_xml(
                    "InvalidAction",
                    &format!("{other:?} is not served by the replay endpoint"),
                ),
            ),
        };
        shared
            .busy_us
            .fetch_add(started.elapsed().as_micros() as usize, Ordering::Relaxed);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            xml.len()
        );
        // One write: a separate head and body would meet Nagle's delay.
        write.write_all(format!("{head}{xml}").as_bytes()).await?;
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00"), 16)
                        .unwrap_or(0),
                );
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Filters of the request: name -> values.
fn filters(form: &BTreeMap<String, String>) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for n in 1.. {
        let Some(name) = form.get(&format!("Filter.{n}.Name")) else {
            break;
        };
        let values = (1..)
            .map_while(|v| form.get(&format!("Filter.{n}.Value.{v}")).cloned())
            .collect();
        out.push((name.clone(), values));
    }
    out
}

/// EC2's filter matching: `*` any run, `?` one character, `\` escapes.
fn glob(pattern: &str, text: &str) -> bool {
    // The common shapes without allocating: a literal, or a literal prefix and `*`.
    let plain = |s: &str| !s.contains(['*', '?', '\\']);
    if plain(pattern) {
        return pattern == text;
    }
    if let Some(prefix) = pattern.strip_suffix('*').filter(|p| plain(p)) {
        return text.starts_with(prefix);
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && go(&p[2..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(&p, &t)
}

fn matches(i: &ReplayInstance, filters: &[(String, Vec<String>)]) -> bool {
    filters.iter().all(|(name, values)| match name.as_str() {
        "instance-state-name" => values.iter().any(|v| v == &i.state),
        "tag-key" => values.iter().any(|v| i.tags.keys().any(|k| glob(v, k))),
        n if n.starts_with("tag:") => i
            .tags
            .get(&n[4..])
            .is_some_and(|tv| values.iter().any(|v| glob(v, tv))),
        "availability-zone" => values.iter().any(|v| v == &i.zone),
        _ => true,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn describe(shared: &Shared, form: &BTreeMap<String, String>) -> String {
    let f = filters(form);
    let page = form
        .get("MaxResults")
        .and_then(|m| m.parse().ok())
        .unwrap_or(shared.default_page)
        .max(1);
    let start: usize = form
        .get("NextToken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>replay</requestId><reservationSet>",
    );
    let mut seen = 0usize;
    let mut next = None;
    for (idx, i) in shared.instances.iter().enumerate().skip(start) {
        if !matches(i, &f) {
            continue;
        }
        if seen == page {
            next = Some(idx);
            break;
        }
        seen += 1;
        xml.push_str(&format!(
            "<item><reservationId>r-{id}</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet><item><instanceId>{id}</instanceId><imageId>ami-0replay</imageId><instanceState><code>16</code><name>{state}</name></instanceState><instanceType>t3.small</instanceType><launchTime>2026-11-01T00:00:00.000Z</launchTime><placement><availabilityZone>{zone}</availabilityZone></placement><tagSet>",
            id = esc(&i.id),
            state = esc(&i.state),
            zone = esc(&i.zone)
        ));
        for (k, v) in &i.tags {
            xml.push_str(&format!(
                "<item><key>{}</key><value>{}</value></item>",
                esc(k),
                esc(v)
            ));
        }
        xml.push_str("</tagSet></item></instancesSet></item>");
    }
    xml.push_str("</reservationSet>");
    if let Some(n) = next {
        xml.push_str(&format!("<nextToken>{n}</nextToken>"));
    }
    xml.push_str("</DescribeInstancesResponse>");
    xml
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>replay</RequestID></Response>",
        esc(code),
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_and_decode() {
        assert!(glob("devops-mq*", "devops-mq01.x"));
        assert!(!glob("devops-mq*", "devops-nifi-01"));
        assert!(glob("a\\*b", "a*b") && !glob("a\\*b", "axb"));
        assert_eq!(decode("tag%3AName+x"), "tag:Name x");
    }
}
