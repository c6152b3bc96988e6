//! Starts `moto_server` (EC2, DynamoDB, S3 emulation) on a free loopback port.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials moto accepts (any); tests pass them to the backends' builders.
pub const ACCESS_KEY_ID: &str = "testing";
/// Secret of [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "testing";

/// A running `moto_server` on 127.0.0.1; killed (with its process group) on drop,
/// also when the test panics.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl MotoServer {
    /// Starts moto and waits until it answers HTTP; panics with the reason
    /// (and the install command) when it cannot. A port taken between
    /// choosing it and moto binding it is retried with another.
    pub fn start() -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(me) => return me,
                Err(e) => last = e,
            }
        }
        panic!("{last}")
    }

    fn try_start() -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let spawn = |program: &str, args: &[&str]| {
            let mut c = Command::new(program);
            c.args(args)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
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
        let mut me = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if me.answers() {
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

    /// The endpoint URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
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
