//! `SerialProxy`: a local HTTP proxy that forwards one request at a time to
//! an upstream (moto). moto applies a DynamoDB transaction item by item and,
//! when it fails, restores a snapshot of the whole table, so two concurrent
//! requests can undo each other's writes; real DynamoDB serializes
//! conflicting transactions. Behind this proxy, moto gives the isolation
//! DynamoDB guarantees, and concurrency tests test the client, not moto.
//!
//! Started with [`Ec2Throttle`], the proxy also answers a fraction of EC2
//! requests itself, as EC2 does when an account exceeds its API rate: HTTP 400
//! with an EC2 XML error `RequestLimitExceeded`, without forwarding them.
//!
//! [`SerialProxy::conflict_next`] makes it answer DynamoDB requests of one
//! operation as DynamoDB does while another transaction writes the item:
//! HTTP 400 `TransactionConflictException`.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// A running proxy on 127.0.0.1; stopped on drop.
#[derive(Debug)]
pub struct SerialProxy {
    port: u16,
    requests: Arc<AtomicUsize>,
    throttled: Arc<AtomicUsize>,
    conflicts: Conflicts,
    task: tokio::task::JoinHandle<()>,
}

/// The DynamoDB operation (`UpdateItem`) whose next requests are answered
/// with a conflict, how many are left, and how many were answered so.
#[derive(Clone, Debug, Default)]
struct Conflicts {
    next: Arc<std::sync::Mutex<(String, usize)>>,
    answered: Arc<AtomicUsize>,
}

impl Conflicts {
    /// Whether to answer this request with a conflict (counting it).
    fn take(&self, head: &[u8]) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let (op, left) = &mut *next;
        let target = format!(
            "x-amz-target: dynamodb_20120810.{}\r\n",
            op.to_ascii_lowercase()
        );
        if *left == 0
            || !String::from_utf8_lossy(head)
                .to_ascii_lowercase()
                .contains(&target)
        {
            return false;
        }
        *left -= 1;
        self.answered.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// DynamoDB's answer to a write on an item another transaction is writing.
fn transaction_conflict() -> Vec<u8> {
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionConflictException","message":"Transaction is ongoing for the item"}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Which EC2 requests a throttling proxy refuses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ec2Throttle {
    /// Fraction (0.0..=1.0) of EC2 (Query protocol, `Action=`) requests refused.
    pub rate: f64,
    /// Most refusals in a row of one request (same body, as the SDK resends
    /// it with the same client token): past it the request passes, so the
    /// SDK's bounded retries of each `RunInstances` can finish, as they do on
    /// EC2 once the rate drops.
    pub max_in_a_row: u32,
    /// Seed of the random choice.
    pub seed: u64,
}

impl Default for Ec2Throttle {
    fn default() -> Self {
        Self {
            rate: 0.3,
            max_in_a_row: 2,
            seed: 7,
        }
    }
}

/// The throttle's random state and each request body's current run of refusals.
#[derive(Debug)]
struct Throttler {
    conf: Ec2Throttle,
    rng: StdRng,
    in_a_row: HashMap<u64, u32>,
}

impl Throttler {
    /// Whether to refuse this request (EC2 requests only).
    fn refuse(&mut self, head: &[u8], body: &[u8]) -> bool {
        let ec2 = body.starts_with(b"Action=") || body.windows(8).any(|w| w == b"&Action=");
        let dynamo = String::from_utf8_lossy(head)
            .to_ascii_lowercase()
            .contains("x-amz-target:");
        if !ec2 || dynamo {
            return false;
        }
        let mut h = DefaultHasher::new();
        body.hash(&mut h);
        let streak = self.in_a_row.entry(h.finish()).or_default();
        let refuse = *streak < self.conf.max_in_a_row
            && self.rng.random_bool(self.conf.rate.clamp(0.0, 1.0));
        *streak = if refuse { *streak + 1 } else { 0 };
        refuse
    }
}

/// EC2's answer to a throttled request.
fn request_limit_exceeded(n: usize) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>throttle-{n}</RequestID></Response>"
    );
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Drop for SerialProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SerialProxy {
    /// Proxies to `upstream_port` on 127.0.0.1.
    pub async fn start(upstream_port: u16) -> Self {
        Self::start_with(upstream_port, None).await
    }

    /// Proxies to `upstream_port`, refusing EC2 requests as `throttle` says.
    pub async fn start_throttling(upstream_port: u16, throttle: Ec2Throttle) -> Self {
        Self::start_with(upstream_port, Some(throttle)).await
    }

    async fn start_with(upstream_port: u16, throttle: Option<Ec2Throttle>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("addr").port();
        let lock = Arc::new(Mutex::new(()));
        let requests = Arc::new(AtomicUsize::new(0));
        let throttled = Arc::new(AtomicUsize::new(0));
        let conflicts = Conflicts::default();
        let shared = Shared {
            conflicts: conflicts.clone(),
            upstream: upstream_port,
            lock,
            forwarded: requests.clone(),
            throttled: throttled.clone(),
            throttler: throttle.map(|conf| {
                Arc::new(std::sync::Mutex::new(Throttler {
                    conf,
                    rng: StdRng::seed_from_u64(conf.seed),
                    in_a_row: HashMap::new(),
                }))
            }),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(client, shared).await;
                });
            }
        });
        Self {
            port,
            requests,
            throttled,
            conflicts,
            task,
        }
    }

    /// Answers the next `n` DynamoDB `operation` requests (`UpdateItem`)
    /// with `TransactionConflictException`, without forwarding them.
    pub fn conflict_next(&self, operation: &str, n: usize) {
        *self
            .conflicts
            .next
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (operation.to_string(), n);
    }

    /// Requests answered with `TransactionConflictException` so far.
    pub fn conflicted(&self) -> usize {
        self.conflicts.answered.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with `RequestLimitExceeded` so far.
    pub fn throttled(&self) -> usize {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// What every connection's task shares.
#[derive(Clone, Debug)]
struct Shared {
    upstream: u16,
    lock: Arc<Mutex<()>>,
    forwarded: Arc<AtomicUsize>,
    throttled: Arc<AtomicUsize>,
    throttler: Option<Arc<std::sync::Mutex<Throttler>>>,
    conflicts: Conflicts,
}

async fn serve(client: TcpStream, shared: Shared) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let (read, mut write) = client.into_split();
    let Some((head, body)) = read_request(&mut BufReader::new(read)).await? else {
        return Ok(());
    };
    let refuse = shared.throttler.as_ref().is_some_and(|t| {
        t.lock()
            .unwrap_or_else(|p| p.into_inner())
            .refuse(&head, &body)
    });
    if refuse {
        let n = shared.throttled.fetch_add(1, Ordering::Relaxed);
        write.write_all(&request_limit_exceeded(n)).await?;
        return Ok(());
    }
    if shared.conflicts.take(&head) {
        write.write_all(&transaction_conflict()).await?;
        return Ok(());
    }
    let response = {
        let _one_at_a_time = shared.lock.lock().await;
        shared.forwarded.fetch_add(1, Ordering::Relaxed);
        forward(shared.upstream, &head, &body).await?
    };
    write.write_all(&response).await?;
    Ok(())
}

/// Reads one HTTP/1.1 request: its head (every header but `Connection`,
/// then `Connection: close` and the blank line) and `Content-Length` bytes
/// of body; `None` when the client closed first. One request per
/// connection: the upstream closes after its response, and so do the
/// proxies; the client reconnects.
pub(crate) async fn read_request<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    Ok(Some((head, body)))
}

/// Sends one request to 127.0.0.1:`upstream` and returns the whole response.
pub(crate) async fn forward(upstream: u16, head: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.write_all(head).await?;
    up.write_all(body).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    Ok(response)
}

/// Decodes one `application/x-www-form-urlencoded` component.
pub(crate) fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
