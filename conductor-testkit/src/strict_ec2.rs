//! `StrictEc2`: a local HTTP front before moto that refuses EC2 requests
//! breaking EC2's documented limits, with EC2's own error codes, as EC2
//! does and moto does not:
//!
//! | limit | refused with |
//! |---|---|
//! | more than 50 tags on one resource (`Tag.N` of CreateTags, each `TagSpecification.N`) | `TagLimitExceeded` |
//! | a tag key over 128 or a value over 256 characters; a key starting with `aws:` | `InvalidParameterValue` |
//! | user data over 16 KiB (decoded) | `InvalidParameterValue` |
//! | a `ClientToken` over 64 characters or not ASCII | `InvalidParameterValue` |
//! | more than 200 values in one filter | `FilterLimitExceeded` |
//! | `MaxResults` outside 5 to 1000 | `InvalidParameterValue` |
//!
//! Every other request (DynamoDB, S3, moto's own API) passes unchanged.
//! [`MotoServer`](crate::moto::MotoServer) puts one before each moto it
//! starts, so every moto test of EC2 runs through it. Requests are
//! forwarded in parallel, one per connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::proxy::{form_decode, forward, read_request};

/// EC2's answer to a request that breaks one of its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// EC2's error code (`TagLimitExceeded`, `InvalidParameterValue`, ...).
    pub code: &'static str,
    /// The message, naming the parameter.
    pub message: String,
}

fn refusal(code: &'static str, message: String) -> Option<Refusal> {
    Some(Refusal { code, message })
}

/// The decoded parameters of an EC2 Query request body.
fn params(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    Some(
        text.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (form_decode(k), form_decode(v))
            })
            .collect(),
    )
}

/// Bytes of the data a base64 text decodes to.
fn base64_len(s: &str) -> usize {
    let s = s.trim_end_matches('=');
    s.len() * 3 / 4
}

/// What EC2 answers an EC2 Query request with (its parameters: a form body,
/// or the query string of a GET), when it breaks one of the limits in the
/// module's table; `None` when EC2 takes it (or when it is no EC2 request).
pub fn check(form: &[u8]) -> Option<Refusal> {
    let params = params(form)?;
    params.iter().find(|(k, _)| k == "Action")?;
    // Tags per resource: `Tag.N.*` (CreateTags) or `TagSpecification.N.Tag.M.*`.
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    let mut filter_values: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, v) in &params {
        let segs: Vec<&str> = k.split('.').collect();
        if let Some(i) = segs.iter().position(|s| *s == "Tag") {
            let resource = &k[..segs[..i].iter().map(|s| s.len() + 1).sum::<usize>()];
            match segs.last() {
                Some(&"Key") => {
                    *tags.entry(resource).or_default() += 1;
                    if v.chars().count() > 128 {
                        return refusal(
                            "InvalidParameterValue",
                            format!("Tag key exceeds the maximum length of 128 characters: {k}"),
                        );
                    }
                    if v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
                        return refusal(
                            "InvalidParameterValue",
                            format!("Tag keys starting with 'aws:' are reserved for internal use: {k}={v}"),
                        );
                    }
                }
                Some(&"Value") if v.chars().count() > 256 => {
                    return refusal(
                        "InvalidParameterValue",
                        format!("Tag value exceeds the maximum length of 256 characters: {k}"),
                    );
                }
                _ => {}
            }
        }
        if segs.len() == 4 && segs[0] == "Filter" && segs[2] == "Value" {
            *filter_values
                .entry(&k[..segs[0].len() + segs[1].len() + 1])
                .or_default() += 1;
        }
        match k.as_str() {
            "UserData" if base64_len(v) > 16 * 1024 => {
                return refusal(
                    "InvalidParameterValue",
                    format!(
                        "User data is limited to 16384 bytes (got {})",
                        base64_len(v)
                    ),
                );
            }
            "ClientToken" if v.len() > 64 || !v.is_ascii() => {
                return refusal(
                    "InvalidParameterValue",
                    format!("Value ({v}) for parameter clientToken is invalid. Maximum 64 ASCII characters"),
                );
            }
            "MaxResults" if !v.parse::<u32>().is_ok_and(|n| (5..=1000).contains(&n)) => {
                return refusal(
                    "InvalidParameterValue",
                    format!("Value ( {v} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."),
                );
            }
            _ => {}
        }
    }
    if let Some((resource, n)) = tags.iter().find(|(_, n)| **n > 50) {
        return refusal(
            "TagLimitExceeded",
            format!("The maximum number of tags per resource is 50 ({n} given in {resource}Tag)"),
        );
    }
    if let Some((filter, n)) = filter_values.iter().find(|(_, n)| **n > 200) {
        return refusal(
            "FilterLimitExceeded",
            format!("The maximum number of filter values is 200 ({n} given in {filter})"),
        );
    }
    None
}

/// The query string of a request's target (`GET /?Action=... HTTP/1.1`).
fn query(head: &[u8]) -> &[u8] {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let target = line.split(|b| *b == b' ').nth(1).unwrap_or_default();
    match target.iter().position(|b| *b == b'?') {
        Some(i) => &target[i + 1..],
        None => &[],
    }
}

/// EC2's XML error response for `r`.
fn error_response(r: &Refusal, n: usize) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>strict-{n}</RequestID></Response>",
        r.code,
        r.message.replace('&', "&amp;").replace('<', "&lt;")
    );
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A running strict front on 127.0.0.1, served by a thread of its own (so
/// blocking tests can start it); stopped on drop.
#[derive(Debug)]
pub struct StrictEc2 {
    port: u16,
    refused: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StrictEc2 {
    /// Serves on a free loopback port, forwarding to 127.0.0.1:`upstream_port`.
    /// Panics when no port can be bound (a test set-up failure).
    pub fn start(upstream_port: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("addr").port();
        let refused = Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("strict-ec2".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the strict EC2 front");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    let accept = async {
                        loop {
                            let Ok((client, _)) = listener.accept().await else {
                                continue;
                            };
                            let count = count.clone();
                            tokio::spawn(async move {
                                let _ = serve(client, upstream_port, &count).await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = accept => {}
                    }
                });
            })
            .expect("a thread for the strict EC2 front");
        Self {
            port,
            refused,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The front's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for StrictEc2 {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(client: TcpStream, upstream: u16, refused: &AtomicUsize) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let (read, mut write) = client.into_split();
    let Some((head, body)) = read_request(&mut BufReader::new(read)).await? else {
        return Ok(());
    };
    let dynamo = String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("x-amz-target:");
    // Salt's EC2 driver sends its parameters in the query string of a GET.
    let form = if body.is_empty() {
        query(&head)
    } else {
        &body[..]
    };
    if let Some(r) = (!dynamo).then(|| check(form)).flatten() {
        let n = refused.fetch_add(1, Ordering::Relaxed);
        write.write_all(&error_response(&r, n)).await?;
        return Ok(());
    }
    let response = forward(upstream, &head, &body).await?;
    write.write_all(&response).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(prefix: &str, n: usize) -> String {
        (1..=n)
            .map(|i| format!("&{prefix}Tag.{i}.Key=k{i}&{prefix}Tag.{i}.Value=v"))
            .collect()
    }

    fn code(body: &str) -> Option<&'static str> {
        check(body.as_bytes()).map(|r| r.code)
    }

    #[test]
    fn fifty_tags_per_resource_pass_and_fifty_one_are_refused() {
        let run = "Action=RunInstances&ImageId=ami-1";
        assert_eq!(
            code(&format!("{run}{}", tags("TagSpecification.1.", 50))),
            None
        );
        assert_eq!(
            code(&format!(
                "{run}{}{}",
                tags("TagSpecification.1.", 50),
                tags("TagSpecification.2.", 50)
            )),
            None,
            "the limit is per resource"
        );
        assert_eq!(
            code(&format!("{run}{}", tags("TagSpecification.1.", 51))),
            Some("TagLimitExceeded")
        );
        assert_eq!(
            code(&format!(
                "Action=CreateTags&ResourceId.1=i-1{}",
                tags("", 51)
            )),
            Some("TagLimitExceeded")
        );
    }

    #[test]
    fn long_keys_values_and_aws_keys_are_invalid_parameters() {
        let base = "Action=CreateTags&ResourceId.1=i-1&Tag.1.Key=";
        let long_key = format!("{base}{}&Tag.1.Value=v", "k".repeat(129));
        assert_eq!(code(&long_key), Some("InvalidParameterValue"));
        let ok = format!("{base}{}&Tag.1.Value={}", "k".repeat(128), "v".repeat(256));
        assert_eq!(code(&ok), None);
        let long_value = format!("{base}k&Tag.1.Value={}", "v".repeat(257));
        assert_eq!(code(&long_value), Some("InvalidParameterValue"));
        assert_eq!(
            code(&format!("{base}AWS%3Aowner&Tag.1.Value=me")),
            Some("InvalidParameterValue")
        );
        // Percent-encoded UTF-8 counts as characters.
        let e = "%C3%A9".repeat(128);
        assert_eq!(code(&format!("{base}{e}&Tag.1.Value=v")), None);
    }

    #[test]
    fn user_data_tokens_filters_and_page_sizes() {
        let ud =
            |bytes: usize| format!("Action=RunInstances&UserData={}", "A".repeat(bytes / 3 * 4));
        assert_eq!(code(&ud(16 * 1024 - 1)), None);
        assert_eq!(code(&ud(17 * 1024)), Some("InvalidParameterValue"));
        assert_eq!(
            code(&format!(
                "Action=RunInstances&ClientToken={}",
                "t".repeat(65)
            )),
            Some("InvalidParameterValue")
        );
        let values = |n: usize| -> String {
            (1..=n)
                .map(|i| format!("&Filter.1.Value.{i}=v{i}"))
                .collect()
        };
        let describe = "Action=DescribeInstances&Filter.1.Name=tag%3AName";
        assert_eq!(code(&format!("{describe}{}", values(200))), None);
        assert_eq!(
            code(&format!("{describe}{}", values(201))),
            Some("FilterLimitExceeded")
        );
        assert_eq!(code("Action=DescribeInstances&MaxResults=1000"), None);
        assert_eq!(
            code("Action=DescribeInstances&MaxResults=1001"),
            Some("InvalidParameterValue")
        );
        assert_eq!(code("{\"TableName\": \"t\"}"), None, "no EC2 request");
    }
}
