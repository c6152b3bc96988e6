//! `AwsFront`: an HTTPS front on 127.0.0.1 that makes moto's EC2 answer
//! Salt's own EC2 cloud driver (`salt-cloud`, Salt 3007) the way AWS does.
//!
//! moto is written for boto3 and the AWS SDKs; Salt's driver speaks to EC2
//! differently, and three of its habits meet gaps in moto that AWS does not
//! have:
//!
//! - **HTTPS only.** The driver builds `https://<endpoint>/` and verifies the
//!   certificate (`requests`, CA bundle from `REQUESTS_CA_BUNDLE`); moto
//!   serves plain HTTP. The front terminates TLS with a certificate made for
//!   this front alone, signed by a CA it writes to [`AwsFront::ca_bundle`].
//! - **0-based lists.** The driver numbers some Query-API lists from 0
//!   (`Tag.0.Key`, `Filter.0.Value.0`, `NetworkInterface.0.SubnetId`). AWS
//!   accepts any numbering; moto reads from 1 and stops at the first gap, so
//!   it silently drops the first element (the `Name` tag: every instance comes
//!   up nameless). The front renumbers every list that has an element 0 from
//!   1, in the query string and in a form body alike.
//! - **Element order.** The driver reads a response by position: the payload
//!   is `root[1]`, after `<requestId>`, which AWS always sends first. moto
//!   sends `requestId` last, so every Describe call looks empty to the
//!   driver. The front moves `<requestId>` to the front of the root element.
//!
//! Requests are forwarded one per connection, in parallel, unchanged
//! otherwise (moto does not check signatures, so renumbering does not
//! break them).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::proxy::{forward, read_request};

/// A running front on 127.0.0.1 forwarding to moto; stopped on drop.
#[derive(Debug)]
pub struct AwsFront {
    port: u16,
    dir: tempfile::TempDir,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AwsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AwsFront {
    /// Serves HTTPS on a free loopback port, forwarding to moto on
    /// `upstream_port`. Panics when no certificate can be made or no port
    /// bound (a test set-up failure).
    pub async fn start(upstream_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the front's CA");
        let (tls, ca_pem) = tls_config().expect("a certificate for 127.0.0.1");
        std::fs::write(dir.path().join("ca.pem"), ca_pem).expect("write the CA bundle");
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let _ = serve(tls, upstream_port, &count).await;
                });
            }
        });
        Self {
            port,
            dir,
            requests,
            task,
        }
    }

    /// `127.0.0.1:<port>`: the `endpoint` of a salt-cloud EC2 provider.
    pub fn endpoint_host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.endpoint_host())
    }

    /// The PEM file of the CA that signed the front's certificate: give it
    /// to Salt's driver as `REQUESTS_CA_BUNDLE` (and to `curl --cacert`).
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The directory holding [`AwsFront::ca_bundle`].
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A server config for `127.0.0.1` and `localhost`, and the PEM of its CA.
fn tls_config() -> Result<(rustls::ServerConfig, String), Box<dyn std::error::Error>> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "conductor-testkit AwsFront CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = leaf.signed_by(&key, &ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    Ok((config, ca.pem()))
}

async fn serve<S>(stream: S, upstream: u16, count: &AtomicUsize) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let Some((head, body)) = read_request(&mut BufReader::new(read)).await? else {
        return Ok(());
    };
    let (head, body) = aws_request(&head, &body);
    count.fetch_add(1, Ordering::Relaxed);
    let response = forward(upstream, &head, &body).await?;
    write.write_all(&aws_response(&response)).await?;
    write.shutdown().await
}

/// The request as AWS would read it: lists numbered from 1 in the request
/// line's query and in a form body (with `Content-Length` set to match).
fn aws_request(head: &[u8], body: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let head = String::from_utf8_lossy(head);
    let (line, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
    let line = match line.split_once('?') {
        Some((path, tail)) => {
            let (query, version) = tail.rsplit_once(' ').unwrap_or((tail, ""));
            format!("{path}?{} {version}", one_based(query))
        }
        None => line.to_string(),
    };
    let form = rest
        .to_ascii_lowercase()
        .contains("application/x-www-form-urlencoded");
    let body = if form {
        one_based(&String::from_utf8_lossy(body)).into_bytes()
    } else {
        body.to_vec()
    };
    let rest = with_content_length(rest, body.len());
    (format!("{line}\r\n{rest}").into_bytes(), body)
}

/// `rest` (header lines ending in the blank line) with its
/// `Content-Length` set to `len`, when it has one.
fn with_content_length(rest: &str, len: usize) -> String {
    rest.split_inclusive("\r\n")
        .map(|l| match l.split_once(':') {
            Some((k, _)) if k.eq_ignore_ascii_case("content-length") => {
                format!("{k}: {len}\r\n")
            }
            _ => l.to_string(),
        })
        .collect()
}

/// A Query-API parameter list with every list that has an element 0
/// renumbered from 1 (`Tag.0.Key&Tag.1.Key` → `Tag.1.Key&Tag.2.Key`), as
/// AWS, which accepts any numbering, reads it. Lists already numbered from 1
/// are left as they are.
pub fn one_based(query: &str) -> String {
    let split = |p: &str| -> Vec<String> {
        let key = p.split_once('=').map_or(p, |(k, _)| k);
        key.split('.').map(str::to_string).collect()
    };
    // The lists (named by their prefix up to the index) that have an element 0.
    let mut from_zero: HashSet<Vec<String>> = HashSet::new();
    for p in query.split('&') {
        let segs = split(p);
        for (i, s) in segs.iter().enumerate() {
            if s == "0" && i > 0 {
                from_zero.insert(segs[..i].to_vec());
            }
        }
    }
    if from_zero.is_empty() {
        return query.to_string();
    }
    query
        .split('&')
        .map(|p| {
            let (key, value) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            };
            let segs: Vec<String> = key.split('.').map(str::to_string).collect();
            let renumbered: Vec<String> = segs
                .iter()
                .enumerate()
                .map(|(i, s)| match s.parse::<u32>() {
                    Ok(n) if i > 0 && from_zero.contains(&segs[..i]) => (n + 1).to_string(),
                    _ => s.clone(),
                })
                .collect();
            let key = renumbered.join(".");
            match value {
                Some(v) => format!("{key}={v}"),
                None => key,
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The response with `<requestId>` first in its root element, as AWS sends
/// it (and `Content-Length` set to match).
fn aws_response(response: &[u8]) -> Vec<u8> {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return response.to_vec();
    };
    let (head, body) = (&response[..split + 4], &response[split + 4..]);
    let Ok(text) = std::str::from_utf8(body) else {
        return response.to_vec();
    };
    let moved = request_id_first(text);
    if moved == text {
        return response.to_vec();
    }
    let head = String::from_utf8_lossy(head);
    let (status, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
    let mut out = format!("{status}\r\n{}", with_content_length(rest, moved.len())).into_bytes();
    out.extend_from_slice(moved.as_bytes());
    out
}

/// An EC2 XML response with its root's `<requestId>` element moved to be
/// the root's first child; any other text unchanged.
pub fn request_id_first(xml: &str) -> String {
    const OPEN: &str = "<requestId>";
    const CLOSE: &str = "</requestId>";
    let Some(start) = xml.rfind(OPEN) else {
        return xml.to_string();
    };
    let Some(len) = xml[start..].find(CLOSE).map(|e| e + CLOSE.len()) else {
        return xml.to_string();
    };
    // The root's start tag: the first element after the prolog.
    let mut at = 0;
    let root_end = loop {
        let Some(lt) = xml[at..].find('<').map(|i| at + i) else {
            return xml.to_string();
        };
        let Some(gt) = xml[lt..].find('>').map(|i| lt + i + 1) else {
            return xml.to_string();
        };
        if !xml[lt..].starts_with("<?") && !xml[lt..].starts_with("<!") {
            break gt;
        }
        at = gt;
    };
    if root_end > start || xml[root_end..start].trim().is_empty() {
        return xml.to_string();
    }
    let element = &xml[start..start + len];
    format!(
        "{}{element}{}{}",
        &xml[..root_end],
        &xml[root_end..start],
        &xml[start + len..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_from_zero_are_renumbered_and_others_kept() {
        assert_eq!(
            one_based("Action=CreateTags&ResourceId.1=i-1&Tag.0.Key=Name&Tag.0.Value=a&Tag.1.Key=x&Tag.1.Value=b"),
            "Action=CreateTags&ResourceId.1=i-1&Tag.1.Key=Name&Tag.1.Value=a&Tag.2.Key=x&Tag.2.Value=b"
        );
        assert_eq!(
            one_based(
                "Filter.0.Name=name&Filter.0.Value.0=ami-1&Filter.1.Name=x&Filter.1.Value.1=y"
            ),
            "Filter.1.Name=name&Filter.1.Value.1=ami-1&Filter.2.Name=x&Filter.2.Value.1=y"
        );
        let aws = "Action=DescribeInstances&Filter.1.Name=tag:Name&Filter.1.Value.1=a";
        assert_eq!(one_based(aws), aws);
    }

    #[test]
    fn the_request_id_moves_to_the_front_of_the_root() {
        let moto = "<?xml version=\"1.0\"?>\n<R xmlns=\"x\"><reservationSet/><requestId>r-1</requestId></R>";
        assert_eq!(
            request_id_first(moto),
            "<?xml version=\"1.0\"?>\n<R xmlns=\"x\"><requestId>r-1</requestId><reservationSet/></R>"
        );
        let aws = request_id_first(moto);
        assert_eq!(request_id_first(&aws), aws);
        let error = "<Response><Errors><Error><Code>X</Code></Error></Errors><RequestID>1</RequestID></Response>";
        assert_eq!(request_id_first(error), error);
    }

    #[test]
    fn content_length_follows_the_rewritten_body() {
        let body = "<R><a/><requestId>1</requestId></R>";
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = String::from_utf8(aws_response(response.as_bytes())).unwrap();
        assert!(
            out.ends_with("<R><requestId>1</requestId><a/></R>"),
            "{out}"
        );
        let (head, req_body) = aws_request(
            b"POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\n\r\n",
            b"Tag.0.Key=a&Tag.9.Key=b",
        );
        assert_eq!(req_body, b"Tag.1.Key=a&Tag.10.Key=b");
        assert!(String::from_utf8_lossy(&head).contains("Content-Length: 24\r\n"));
    }
}
