//! `SerialProxy`: a local HTTP proxy that forwards one request at a time to
//! an upstream (moto). moto applies a DynamoDB transaction item by item and,
//! when it fails, restores a snapshot of the whole table, so two concurrent
//! requests can undo each other's writes; real DynamoDB serializes
//! conflicting transactions. Behind this proxy, moto gives the isolation
//! DynamoDB guarantees, and concurrency tests test the client, not moto.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// A running proxy on 127.0.0.1; stopped on drop.
#[derive(Debug)]
pub struct SerialProxy {
    port: u16,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SerialProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SerialProxy {
    /// Proxies to `upstream_port` on 127.0.0.1.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("addr").port();
        let lock = Arc::new(Mutex::new(()));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (lock, counter) = (lock.clone(), counter.clone());
                tokio::spawn(async move {
                    let _ = serve(client, upstream_port, lock, counter).await;
                });
            }
        });
        Self {
            port,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn serve(
    client: TcpStream,
    upstream: u16,
    lock: Arc<Mutex<()>>,
    counter: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let (read, mut write) = client.into_split();
    let mut reader = BufReader::new(read);
    // One request per connection: the upstream closes after its response,
    // and so does the proxy; the client reconnects.
    // One request: the head, then Content-Length bytes of body.
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
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
    let response = {
        let _one_at_a_time = lock.lock().await;
        counter.fetch_add(1, Ordering::Relaxed);
        let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
        up.write_all(&head).await?;
        up.write_all(&body).await?;
        let mut response = Vec::new();
        up.read_to_end(&mut response).await?;
        response
    };
    write.write_all(&response).await?;
    Ok(())
}
