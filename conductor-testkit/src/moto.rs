//! Starts `moto_server` (EC2, DynamoDB, S3 emulation) on a free loopback
//! port behind a [`StrictEc2`] front (EC2's request limits, which moto does
//! not enforce), and makes the network a launch in moto's EC2 needs
//! ([`subnet_in`]).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conductor_core::Zone;

use crate::net::{free_port, group_listens_on};
use crate::strict_ec2::StrictEc2;

/// Credentials moto accepts (any); tests pass them to the backends' builders.
pub const ACCESS_KEY_ID: &str = "testing";
/// Secret of [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "testing";

/// A running `moto_server` on 127.0.0.1, reached through a [`StrictEc2`]
/// front; killed (with its process group) on drop, also when the test panics.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    strict: Option<StrictEc2>,
}

impl MotoServer {
    /// Starts moto and waits until it answers HTTP; panics with the reason
    /// (and the install command) when it cannot. A port taken between
    /// choosing it and moto binding it is retried with another.
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// [`MotoServer::start`] with `env` in moto's environment: its settings,
    /// such as `MOTO_ENABLE_AMI_VALIDATION=true` (launches of an image moto
    /// does not know fail, as on EC2).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(env) {
                Ok(me) => return me,
                Err(e) => last = e,
            }
        }
        panic!("{last}")
    }

    fn try_start(env: &[(&str, &str)]) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let spawn = |program: &str, args: &[&str]| {
            let mut c = Command::new(program);
            c.args(args)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c.envs(env.iter().copied());
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            c.spawn()
        };
        let child = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .map_err(|e| {
                format!(
                    "cannot start moto_server ({e}); install it with: pip install 'moto[server]'"
                )
            })?;
        // From here on, Drop kills the server whatever happens.
        let mut me = Self {
            child,
            port,
            strict: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let pgid = i32::try_from(me.child.id()).expect("a pid");
        loop {
            // Ours listens (not another server that took the port first,
            // which would answer too), and serves.
            if group_listens_on(pgid, port) && me.answers() {
                me.strict = Some(StrictEc2::start(port));
                return Ok(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(format!(
                    "moto_server exited at start ({status}) on port {port}; is 'moto[server]' installed?"
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "moto_server did not answer on port {port} within 30 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether moto answers an HTTP request (its `/moto-api/` page) now.
    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let mut head = [0u8; 12];
        s.write_all(req.as_bytes()).is_ok()
            && s.read_exact(&mut head).is_ok()
            && head.starts_with(b"HTTP/1.")
    }

    /// The server's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The endpoint URL, `http://127.0.0.1:<port>` of the strict front
    /// (every request passes through it; EC2 requests beyond EC2's limits
    /// are refused as EC2 refuses them).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The port of the strict front (proxies put before moto forward to it).
    pub fn port(&self) -> u16 {
        self.strict.as_ref().map_or(self.port, StrictEc2::port)
    }

    /// The strict front's count of refused requests.
    pub fn refused(&self) -> usize {
        self.strict.as_ref().map_or(0, StrictEc2::refused)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // SAFETY: signals the process group this server leads.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A VPC and a subnet of it in moto's EC2.
#[derive(Clone, Debug)]
pub struct Subnet {
    /// The VPC.
    pub vpc_id: String,
    /// The subnet, in the zone asked for.
    pub subnet_id: String,
}

/// Makes a VPC (`10.0.0.0/16`) and a subnet of it (`10.0.1.0/24`) in `zone`
/// in the EC2 of the moto at `endpoint` (moto checks the subnet a launch
/// names). See [`subnet_in_cidrs`].
pub fn subnet_in(endpoint: &str, zone: &Zone) -> Subnet {
    subnet_in_cidrs(endpoint, zone, "10.0.0.0/16", "10.0.1.0/24")
}

/// Makes a VPC of `vpc_cidr` and a subnet of it of `subnet_cidr` in `zone`
/// in the EC2 of the moto at `endpoint`. Plain HTTP, so the testkit needs
/// no AWS SDK: moto does not check signatures, and routes an unsigned EC2
/// Query call by the service and region its `Authorization` header names.
pub fn subnet_in_cidrs(endpoint: &str, zone: &Zone, vpc_cidr: &str, subnet_cidr: &str) -> Subnet {
    let region = zone.region();
    let call = |params: &[(&str, &str)]| ec2_call(endpoint, region.as_str(), params);
    let vpc_id = xml_text(
        &call(&[("Action", "CreateVpc"), ("CidrBlock", vpc_cidr)]),
        "vpcId",
    );
    let subnet_id = xml_text(
        &call(&[
            ("Action", "CreateSubnet"),
            ("VpcId", &vpc_id),
            ("CidrBlock", subnet_cidr),
            ("AvailabilityZone", zone.as_str()),
        ]),
        "subnetId",
    );
    Subnet { vpc_id, subnet_id }
}

/// The id of an image moto's EC2 has in `region` (moto ships a few).
pub fn image_in(endpoint: &str, region: &str) -> String {
    xml_text(
        &ec2_call(endpoint, region, &[("Action", "DescribeImages")]),
        "imageId",
    )
}

/// Makes the EC2 key pair `name` in `region` of the moto at `endpoint`
/// (Salt's EC2 driver names one in every launch, `keyname`).
pub fn key_pair_in(endpoint: &str, region: &str, name: &str) {
    ec2_call(
        endpoint,
        region,
        &[("Action", "CreateKeyPair"), ("KeyName", name)],
    );
}

/// The `Name` tags of the live (pending or running) instances of `region`
/// in `account` (moto's default one when `None`) of the moto at `endpoint`,
/// sorted: what each account holds, read as moto itself keeps it.
pub fn live_names_in(endpoint: &str, region: &str, account: Option<&str>) -> Vec<String> {
    let xml = ec2_call_as(
        endpoint,
        region,
        account,
        &[
            ("Action", "DescribeInstances"),
            ("Filter.1.Name", "instance-state-name"),
            ("Filter.1.Value.1", "pending"),
            ("Filter.1.Value.2", "running"),
        ],
    );
    let mut names: Vec<String> = xml
        .split("<key>Name</key>")
        .skip(1)
        .filter_map(|rest| {
            let (_, value) = rest.split_once("<value>")?;
            Some(value.split_once("</value>")?.0.to_string())
        })
        .collect();
    names.sort();
    names
}

/// One EC2 Query API call to moto at `endpoint` in `region`; its XML answer.
fn ec2_call(endpoint: &str, region: &str, params: &[(&str, &str)]) -> String {
    ec2_call_as(endpoint, region, None, params)
}

/// [`ec2_call`] in `account` (moto's `x-moto-account-id`), else moto's default account.
fn ec2_call_as(
    endpoint: &str,
    region: &str,
    account: Option<&str>,
    params: &[(&str, &str)],
) -> String {
    use std::io::{Read, Write};
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{endpoint} is not an http:// endpoint"))
        .trim_end_matches('/');
    let body = [("Version", "2016-11-15")]
        .iter()
        .chain(params)
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let account_header = account
        .map(|a| format!("x-moto-account-id: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {authority}\r\n\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20240101/{region}/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\
         {account_header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    std::net::TcpStream::connect(authority)
        .and_then(|mut s| {
            s.write_all(request.as_bytes())?;
            s.read_to_string(&mut answer)
        })
        .unwrap_or_else(|e| panic!("moto at {endpoint}: {e}"));
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "moto at {endpoint} refused {params:?}: {answer}"
    );
    answer
}

/// The text of the first `<tag>` element of `xml`.
fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    xml.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map(|(text, _)| text.to_string())
        .unwrap_or_else(|| panic!("no <{tag}> in moto's answer: {xml}"))
}

/// `application/x-www-form-urlencoded` text of `value`.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
