//! `Ec2Replay`: a local HTTP endpoint that speaks enough of the EC2 query
//! API for Conductor at scale. `DescribeInstances` answers pages of real EC2
//! XML (`reservationSet`, `nextToken`) over any number of generated
//! instances, honouring the filters Conductor sends (`tag:Name` prefixes,
//! `tag-key`, `tag:<key>` values, `instance-state-name`), `MaxResults`, and
//! the region a request is signed for (an instance is listed in the region
//! of its zone). Started with [`Ec2Replay::start_cloud`], it also serves
//! `RunInstances` (tags from `TagSpecification`, idempotent per
//! `ClientToken`), `TerminateInstances` and `CreateTags`, and keeps what they did, so later
//! reads list the new instances and leave the terminated ones out. Every
//! call waits an optional fixed latency. moto is too slow for inventories of
//! tens of thousands and does not paginate; this is for those.
//! It counts calls (per action too) and the most calls served at once, and
//! can answer the next calls with injected errors (throttling, 5xx); any
//! action it does not serve is refused with `InvalidAction` (400).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::proxy::form_decode;

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
    cloud: Arc<RwLock<Cloud>>,
    calls: Arc<AtomicUsize>,
    busy_us: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Ec2Replay {
    /// Stops accepting and closes every open connection.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

struct Shared {
    cloud: Arc<RwLock<Cloud>>,
    /// Whether RunInstances and TerminateInstances are served.
    launches: bool,
    default_page: usize,
    latency: Duration,
    calls: Arc<AtomicUsize>,
    busy_us: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

/// The instances and what launches did to them.
struct Cloud {
    instances: Vec<ReplayInstance>,
    index: Index,
    /// Instance id -> position.
    by_id: HashMap<String, usize>,
    /// Image and type of the instance at each position, when RunInstances
    /// started it (a vector: a hash lookup per instance served is slow in
    /// debug builds).
    launched: Vec<Option<(String, String)>>,
    /// ClientToken -> positions it launched.
    tokens: HashMap<String, Vec<usize>>,
    serial: u64,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud")
            .field("instances", &self.instances.len())
            .field("launched", &self.launched.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

impl Cloud {
    fn new(instances: Vec<ReplayInstance>) -> Self {
        let index = Index::build(&instances);
        let by_id = instances
            .iter()
            .enumerate()
            .map(|(n, i)| (i.id.clone(), n))
            .collect();
        Self {
            launched: vec![None; instances.len()],
            instances,
            index,
            by_id,
            tokens: HashMap::new(),
            serial: 0,
        }
    }

    /// An instance id not used yet (EC2's 17 hex digits).
    fn fresh_id(&mut self) -> String {
        loop {
            self.serial += 1;
            let id = format!("i-{:017x}", (1u64 << 63) | self.serial);
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds a launched instance; returns its position.
    fn add(&mut self, i: ReplayInstance, image: String, size: String) -> usize {
        let pos = self.instances.len();
        self.index.add(pos, &i);
        self.by_id.insert(i.id.clone(), pos);
        self.launched.push(Some((image, size)));
        self.instances.push(i);
        pos
    }
}

/// Counters shared by the endpoint and its handle.
#[derive(Debug, Default)]
struct Stats {
    inflight: AtomicUsize,
    peak: AtomicUsize,
    by_action: Mutex<BTreeMap<String, usize>>,
    served: AtomicUsize,
    faults: Mutex<VecDeque<(u16, String)>>,
}

/// Counts a call in flight while alive.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a Stats) -> Self {
        let now = stats.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ec2Replay {
    /// Serves `instances` on a free 127.0.0.1 port; pages hold at most
    /// `MaxResults` or `default_page` instances; each call waits `latency`.
    /// Only DescribeInstances is served: any other action is refused.
    pub async fn start(
        instances: Vec<ReplayInstance>,
        default_page: usize,
        latency: Duration,
    ) -> Self {
        Self::start_with(instances, default_page, latency, false).await
    }

    /// As [`Ec2Replay::start`], and also serves RunInstances and
    /// TerminateInstances: a simulated cloud for whole runs.
    pub async fn start_cloud(
        instances: Vec<ReplayInstance>,
        default_page: usize,
        latency: Duration,
    ) -> Self {
        Self::start_with(instances, default_page, latency, true).await
    }

    async fn start_with(
        instances: Vec<ReplayInstance>,
        default_page: usize,
        latency: Duration,
        launches: bool,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let calls = Arc::new(AtomicUsize::new(0));
        let busy_us = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Stats::default());
        let cloud = Arc::new(RwLock::new(Cloud::new(instances)));
        let shared = Arc::new(Shared {
            cloud: cloud.clone(),
            launches,
            default_page: default_page.max(1),
            latency,
            calls: calls.clone(),
            busy_us: busy_us.clone(),
            stats: stats.clone(),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream, shared) => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        Self {
            port,
            cloud,
            calls,
            busy_us,
            stats,
            task,
            stop,
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

    /// Every instance the endpoint holds now (launched and terminated ones too).
    pub fn instances(&self) -> Vec<ReplayInstance> {
        read(&self.cloud).instances.clone()
    }

    /// Calls so far by action.
    pub fn calls_by_action(&self) -> BTreeMap<String, usize> {
        self.stats
            .by_action
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls answered so far (every action, refused ones too).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls of one action (`DescribeInstances`, `RunInstances`, ...) so far.
    pub fn calls_of(&self, action: &str) -> usize {
        let m = self
            .stats
            .by_action
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.get(action).copied().unwrap_or(0)
    }

    /// Instances sent in DescribeInstances answers so far.
    pub fn instances_served(&self) -> usize {
        self.stats.served.load(Ordering::Relaxed)
    }

    /// The most calls that were being served at the same time.
    pub fn peak_concurrency(&self) -> usize {
        self.stats.peak.load(Ordering::SeqCst)
    }

    /// Answers the next `times` calls with HTTP `status` and EC2 error `code`
    /// (`RequestLimitExceeded` with 503 for throttling, `InternalError` with 500).
    pub fn inject(&self, status: u16, code: &str, times: usize) {
        let mut f = self.stats.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.extend(std::iter::repeat_n((status, code.to_string()), times));
    }
}

async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut len = 0usize;
        let mut region = None;
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
                } else if k.eq_ignore_ascii_case("authorization") {
                    region = signed_region(v);
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).await?;
        let form = parse_form(&String::from_utf8_lossy(&body));
        shared.calls.fetch_add(1, Ordering::Relaxed);
        let action = form.get("Action").cloned().unwrap_or_default();
        *shared
            .stats
            .by_action
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(action.clone())
            .or_default() += 1;
        let _inflight = InFlight::enter(&shared.stats);
        if !shared.latency.is_zero() {
            tokio::time::sleep(shared.latency).await;
        }
        let fault = shared
            .stats
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let started = std::time::Instant::now();
        let (status, xml) = match (fault, action.as_str()) {
            (Some((code, err)), _) => (
                status_line(code),
                error_xml(&err, "injected by the replay endpoint"),
            ),
            (None, "DescribeInstances") => (
                "200 OK".to_string(),
                describe(&shared, &form, region.as_deref()),
            ),
            (None, "RunInstances") if shared.launches => {
                answer(run_instances(&shared, &form, region.as_deref()))
            }
            (None, "TerminateInstances") if shared.launches => {
                answer(terminate(&shared, &form, region.as_deref()))
            }
            (None, "CreateTags") if shared.launches => {
                answer(create_tags(&shared, &form, region.as_deref()))
            }
            (None, other) => (
                "400 Bad Request".to_string(),
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

/// Indexes of the instances by `Name` and by tag key, as EC2 answers a
/// selective filter without scanning the account: a filter on a plain name
/// prefix, an exact name, or plain tag keys reads only its candidates.
struct Index {
    /// (Name, instance position), sorted.
    by_name: Vec<(String, usize)>,
    /// Tag key -> instance positions, ascending.
    by_key: std::collections::HashMap<String, Vec<usize>>,
}

impl Index {
    fn build(instances: &[ReplayInstance]) -> Self {
        let mut by_name: Vec<(String, usize)> = instances
            .iter()
            .enumerate()
            .filter_map(|(n, i)| Some((i.tags.get("Name")?.clone(), n)))
            .collect();
        by_name.sort();
        let mut by_key: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (n, i) in instances.iter().enumerate() {
            for k in i.tags.keys() {
                by_key.entry(k.clone()).or_default().push(n);
            }
        }
        Self { by_name, by_key }
    }

    /// Indexes the instance at `pos` (after every indexed one).
    fn add(&mut self, pos: usize, i: &ReplayInstance) {
        if let Some(name) = i.tags.get("Name") {
            let at = self
                .by_name
                .partition_point(|(n, p)| (n.as_str(), *p) < (name.as_str(), pos));
            self.by_name.insert(at, (name.clone(), pos));
        }
        for k in i.tags.keys() {
            self.by_key.entry(k.clone()).or_default().push(pos);
        }
    }

    /// Records that the instance at `pos` now has tag `key` (kept ascending).
    fn add_key(&mut self, key: &str, pos: usize) {
        let list = self.by_key.entry(key.to_string()).or_default();
        if let Err(at) = list.binary_search(&pos) {
            list.insert(at, pos);
        }
    }

    /// Positions that may match, ascending; `None` when no filter is indexable.
    fn candidates(&self, filters: &[(String, Vec<String>)]) -> Option<Vec<usize>> {
        let plain = |v: &str| !v.contains(['*', '?', '\\']);
        let mut best: Option<Vec<usize>> = None;
        for (name, values) in filters {
            let found: Option<Vec<usize>> = if name == "tag:Name" {
                values
                    .iter()
                    .map(|v| match v.strip_suffix('*') {
                        Some(p) if plain(p) => Some((p, true)),
                        None if plain(v) => Some((v.as_str(), false)),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(|pats| {
                        let mut out = Vec::new();
                        for (p, prefix) in pats {
                            let from = self.by_name.partition_point(|(n, _)| n.as_str() < p);
                            out.extend(
                                self.by_name[from..]
                                    .iter()
                                    .take_while(
                                        |(n, _)| {
                                            if prefix {
                                                n.starts_with(p)
                                            } else {
                                                n == p
                                            }
                                        },
                                    )
                                    .map(|(_, i)| *i),
                            );
                        }
                        out
                    })
            } else if let Some(key) = name.strip_prefix("tag:") {
                Some(self.by_key.get(key).cloned().unwrap_or_default())
            } else if name == "tag-key" && values.iter().all(|v| plain(v)) {
                Some(
                    values
                        .iter()
                        .flat_map(|k| self.by_key.get(k).into_iter().flatten().copied())
                        .collect(),
                )
            } else {
                None
            };
            if let Some(mut f) = found {
                if best.as_ref().is_none_or(|b| f.len() < b.len()) {
                    f.sort_unstable();
                    f.dedup();
                    best = Some(f);
                }
            }
        }
        best
    }
}

fn status_line(code: u16) -> String {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    format!("{code} {reason}")
}

fn parse_form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
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

/// `s` escaped for XML text; borrowed when nothing needs escaping (the
/// common case, which keeps pages of 1,000 instances cheap to build). One
/// search per character: a single char's search is memchr even in a debug
/// build, a set of chars is not.
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if !['&', '<', '>', '"'].iter().any(|c| s.contains(*c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;"),
    )
}

/// The read lock of the state (a panicked writer left it consistent).
fn read(cloud: &RwLock<Cloud>) -> RwLockReadGuard<'_, Cloud> {
    cloud.read().unwrap_or_else(|p| p.into_inner())
}

fn write(cloud: &RwLock<Cloud>) -> RwLockWriteGuard<'_, Cloud> {
    cloud.write().unwrap_or_else(|p| p.into_inner())
}

/// The region a request is signed for (SigV4 `Credential=<key>/<date>/<region>/...`).
fn signed_region(authorization: &str) -> Option<String> {
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(2).map(str::to_string)
}

/// Whether `zone` is in `region` (any zone when the request is unsigned).
fn in_region(zone: &str, region: Option<&str>) -> bool {
    // `us-east-1a`, or a local zone such as `us-east-1-bos-1a`; not `us-east-10a`.
    region.is_none_or(|r| {
        zone.strip_prefix(r).is_some_and(|rest| {
            rest.starts_with('-')
                || (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase()))
        })
    })
}

/// EC2's code of a state name.
fn state_code(state: &str) -> u8 {
    match state {
        "pending" => 0,
        "running" => 16,
        "shutting-down" => 32,
        "terminated" => 48,
        "stopping" => 64,
        _ => 80,
    }
}

/// Appends `<code>..</code><name>..</name>` of `state`.
fn push_state(xml: &mut String, state: &str) {
    let _ = write!(
        xml,
        "<code>{}</code><name>{}</name>",
        state_code(state),
        esc(state)
    );
}

/// One `instancesSet` item: the instance at `pos`, shown in `state`.
fn push_instance(xml: &mut String, cloud: &Cloud, pos: usize, state: &str) {
    let i = &cloud.instances[pos];
    let (image, size) = cloud.launched[pos]
        .as_ref()
        .map_or(("ami-0replay", "t3.small"), |(i, s)| {
            (i.as_str(), s.as_str())
        });
    let _ = write!(
        xml,
        "<item><instanceId>{}</instanceId><imageId>{}</imageId><instanceState>",
        esc(&i.id),
        esc(image)
    );
    push_state(xml, state);
    let _ = write!(
        xml,
        "</instanceState><instanceType>{}</instanceType><launchTime>2026-11-01T00:00:00.000Z</launchTime><placement><availabilityZone>{}</availabilityZone></placement><privateIpAddress>10.{}.{}.{}</privateIpAddress><tagSet>",
        esc(size),
        esc(&i.zone),
        (pos >> 16) & 255,
        (pos >> 8) & 255,
        pos & 255,
    );
    for (k, v) in &i.tags {
        let _ = write!(
            xml,
            "<item><key>{}</key><value>{}</value></item>",
            esc(k),
            esc(v)
        );
    }
    xml.push_str("</tagSet></item>");
}

const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

fn describe(shared: &Shared, form: &BTreeMap<String, String>, region: Option<&str>) -> String {
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
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"{XMLNS}\"><requestId>replay</requestId><reservationSet>"
    );
    let cloud = read(&shared.cloud);
    let mut seen = 0usize;
    let mut next = None;
    let candidates: Box<dyn Iterator<Item = usize>> = match cloud.index.candidates(&f) {
        Some(c) => Box::new(c.into_iter().filter(move |&i| i >= start)),
        None => Box::new(start..cloud.instances.len()),
    };
    for idx in candidates {
        let i = &cloud.instances[idx];
        if !in_region(&i.zone, region) || !matches(i, &f) {
            continue;
        }
        if seen == page {
            next = Some(idx);
            break;
        }
        seen += 1;
        let _ = write!(
            xml,
            "<item><reservationId>r-{}</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet>",
            esc(&i.id)
        );
        push_instance(&mut xml, &cloud, idx, &i.state);
        xml.push_str("</instancesSet></item>");
    }
    shared.stats.served.fetch_add(seen, Ordering::Relaxed);
    xml.push_str("</reservationSet>");
    if let Some(n) = next {
        xml.push_str(&format!("<nextToken>{n}</nextToken>"));
    }
    xml.push_str("</DescribeInstancesResponse>");
    xml
}

/// A request EC2 refuses: error code and message (HTTP 400).
type Refusal = (&'static str, String);

fn answer(r: Result<String, Refusal>) -> (String, String) {
    match r {
        Ok(xml) => ("200 OK".to_string(), xml),
        Err((code, message)) => (status_line(400), error_xml(code, &message)),
    }
}

/// The tags of `TagSpecification.N` entries for `resource`.
fn spec_tags(form: &BTreeMap<String, String>, resource: &str) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    for n in 1.. {
        let Some(rt) = form.get(&format!("TagSpecification.{n}.ResourceType")) else {
            break;
        };
        if rt != resource {
            continue;
        }
        for m in 1.. {
            let Some(k) = form.get(&format!("TagSpecification.{n}.Tag.{m}.Key")) else {
                break;
            };
            let v = form
                .get(&format!("TagSpecification.{n}.Tag.{m}.Value"))
                .cloned()
                .unwrap_or_default();
            tags.insert(k.clone(), v);
        }
    }
    tags
}

/// RunInstances: `MaxCount` instances in `Placement.AvailabilityZone` with
/// the instance tags; a `ClientToken` seen before answers its instances again.
fn run_instances(
    shared: &Shared,
    form: &BTreeMap<String, String>,
    region: Option<&str>,
) -> Result<String, Refusal> {
    let image = form.get("ImageId").filter(|i| !i.is_empty()).ok_or((
        "MissingParameter",
        "The request must contain the parameter ImageId".to_string(),
    ))?;
    let count = |key: &str| -> Result<usize, Refusal> {
        form.get(key).map_or(Ok(1), |v| {
            v.parse().map_err(|_| {
                (
                    "InvalidParameterValue",
                    format!("{key} {v:?} is not a number"),
                )
            })
        })
    };
    let (min, max) = (count("MinCount")?, count("MaxCount")?);
    if min == 0 || min > max || max > 1000 {
        return Err((
            "InvalidParameterValue",
            format!("MinCount {min}, MaxCount {max}: need 1 <= MinCount <= MaxCount <= 1000"),
        ));
    }
    let zone = form
        .get("Placement.AvailabilityZone")
        .cloned()
        .unwrap_or_else(|| format!("{}a", region.unwrap_or("us-east-1")));
    if !in_region(&zone, region) {
        return Err((
            "InvalidParameterValue",
            format!("Invalid availability zone: [{zone}]"),
        ));
    }
    let size = form
        .get("InstanceType")
        .cloned()
        .unwrap_or_else(|| "m1.small".into());
    let token = form.get("ClientToken").cloned().unwrap_or_default();
    let mut cloud = write(&shared.cloud);
    let again = cloud
        .tokens
        .get(&token)
        .filter(|_| !token.is_empty())
        .cloned();
    let fresh = again.is_none();
    let positions = match again {
        Some(p) => p,
        None => {
            let tags = spec_tags(form, "instance");
            let p: Vec<usize> = (0..max)
                .map(|_| {
                    let id = cloud.fresh_id();
                    let i = ReplayInstance {
                        id,
                        zone: zone.clone(),
                        state: "running".into(),
                        tags: tags.clone(),
                    };
                    cloud.add(i, image.clone(), size.clone())
                })
                .collect();
            if !token.is_empty() {
                cloud.tokens.insert(token, p.clone());
            }
            p
        }
    };
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RunInstancesResponse xmlns=\"{XMLNS}\"><requestId>replay</requestId><reservationId>r-{}</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet>",
        esc(&cloud.instances[positions[0]].id)
    );
    for &pos in &positions {
        // A new instance is pending in the answer; it reads as running after.
        let state = if fresh {
            "pending"
        } else {
            cloud.instances[pos].state.as_str()
        };
        push_instance(&mut xml, &cloud, pos, state);
    }
    xml.push_str("</instancesSet></RunInstancesResponse>");
    Ok(xml)
}

/// TerminateInstances of `InstanceId.N`: all or, when one is unknown in the
/// region, none (`InvalidInstanceID.NotFound` naming the unknown ids).
fn terminate(
    shared: &Shared,
    form: &BTreeMap<String, String>,
    region: Option<&str>,
) -> Result<String, Refusal> {
    let ids: Vec<String> = (1..)
        .map_while(|n| form.get(&format!("InstanceId.{n}")).cloned())
        .collect();
    if ids.is_empty() {
        return Err((
            "MissingParameter",
            "The request must contain the parameter InstanceId".into(),
        ));
    }
    let mut cloud = write(&shared.cloud);
    all_known(&cloud, &ids, region)?;
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TerminateInstancesResponse xmlns=\"{XMLNS}\"><requestId>replay</requestId><instancesSet>"
    );
    for id in &ids {
        let pos = cloud.by_id[id];
        let before = std::mem::replace(&mut cloud.instances[pos].state, "terminated".into());
        let now = if before == "terminated" {
            "terminated"
        } else {
            "shutting-down"
        };
        let _ = write!(
            xml,
            "<item><instanceId>{}</instanceId><currentState>",
            esc(id)
        );
        push_state(&mut xml, now);
        xml.push_str("</currentState><previousState>");
        push_state(&mut xml, &before);
        xml.push_str("</previousState></item>");
    }
    xml.push_str("</instancesSet></TerminateInstancesResponse>");
    Ok(xml)
}

/// Refuses unless every id is an instance of the region
/// (`InvalidInstanceID.NotFound` naming the unknown ids).
fn all_known(cloud: &Cloud, ids: &[String], region: Option<&str>) -> Result<(), Refusal> {
    let missing: Vec<&str> = ids
        .iter()
        .filter(|id| {
            cloud
                .by_id
                .get(*id)
                .is_none_or(|&p| !in_region(&cloud.instances[p].zone, region))
        })
        .map(String::as_str)
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err((
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{one}' does not exist"),
        )),
        many => Err((
            "InvalidInstanceID.NotFound",
            format!("The instance IDs '{}' do not exist", many.join(", ")),
        )),
    }
}

/// CreateTags of `Tag.N.Key`/`Tag.N.Value` on instances `ResourceId.N`:
/// all or, when one is unknown in the region, none.
fn create_tags(
    shared: &Shared,
    form: &BTreeMap<String, String>,
    region: Option<&str>,
) -> Result<String, Refusal> {
    let ids: Vec<String> = (1..)
        .map_while(|n| form.get(&format!("ResourceId.{n}")).cloned())
        .collect();
    let tags: Vec<(String, String)> = (1..)
        .map_while(|n| {
            let key = form.get(&format!("Tag.{n}.Key"))?;
            let value = form
                .get(&format!("Tag.{n}.Value"))
                .cloned()
                .unwrap_or_default();
            Some((key.clone(), value))
        })
        .collect();
    let mut cloud = write(&shared.cloud);
    all_known(&cloud, &ids, region)?;
    if tags.iter().any(|(k, _)| k == "Name") {
        return Err((
            "InvalidParameterValue",
            "the replay endpoint does not rename instances".into(),
        ));
    }
    for id in &ids {
        let pos = cloud.by_id[id];
        for (k, v) in &tags {
            cloud.index.add_key(k, pos);
            cloud.instances[pos].tags.insert(k.clone(), v.clone());
        }
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateTagsResponse xmlns=\"{XMLNS}\"><requestId>replay</requestId><return>true</return></CreateTagsResponse>"
    ))
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
        assert_eq!(form_decode("tag%3AName+x"), "tag:Name x");
    }

    #[test]
    fn regions_and_tag_specifications() {
        assert_eq!(
            signed_region("AWS4-HMAC-SHA256 Credential=x/20261125/us-west-2/ec2/aws4_request, SignedHeaders=host").as_deref(),
            Some("us-west-2")
        );
        assert!(in_region("us-east-1a", Some("us-east-1")));
        assert!(in_region("us-east-1-bos-1a", Some("us-east-1")));
        assert!(in_region("us-east-1a", None));
        assert!(!in_region("us-east-10a", Some("us-east-1")));
        assert!(!in_region("us-west-2a", Some("us-east-1")));
        let form = parse_form("Action=RunInstances&TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=v&TagSpecification.1.Tag.1.Value=1&TagSpecification.2.ResourceType=instance&TagSpecification.2.Tag.1.Key=Name&TagSpecification.2.Tag.1.Value=a%2Eb&TagSpecification.2.Tag.2.Key=conductor%3Acpid&TagSpecification.2.Tag.2.Value=7");
        assert_eq!(
            spec_tags(&form, "instance"),
            BTreeMap::from([
                ("Name".to_string(), "a.b".to_string()),
                ("conductor:cpid".to_string(), "7".to_string())
            ])
        );
    }

    #[test]
    fn the_index_finds_every_match() {
        let all = ReplayInstance::generate(3_000);
        let index = Index::build(&all);
        let f = |n: &str, v: &[&str]| (n.to_string(), v.iter().map(|s| s.to_string()).collect());
        for filters in [
            vec![f(
                "tag:Name",
                &["svc007-*", "svc010-node000010.us-east-1a.test.example.com"],
            )],
            vec![
                f("tag-key", &["conductor:group"]),
                f("instance-state-name", &["running"]),
            ],
            vec![f("tag:conductor:group", &["svc010"])],
            vec![f("tag:Name", &["svc0?7-*"])],
            vec![
                f("tag:Name", &["svc00*"]),
                f("tag-key", &["conductor:cpid"]),
            ],
        ] {
            let scan: Vec<usize> = (0..all.len())
                .filter(|&i| matches(&all[i], &filters))
                .collect();
            let got: Vec<usize> = match index.candidates(&filters) {
                Some(c) => c
                    .into_iter()
                    .filter(|&i| matches(&all[i], &filters))
                    .collect(),
                None => scan.clone(),
            };
            assert!(!scan.is_empty());
            assert_eq!(got, scan, "{filters:?}");
        }
    }
}
