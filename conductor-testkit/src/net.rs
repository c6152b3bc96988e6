//! Loopback ports for the servers tests start (`moto_server`, `salt-master`)
//! and for endpoints that must refuse every connection.
//!
//! A port chosen free is free only when chosen: a server started on it may
//! find it taken since (by another test's server, or as the local port of
//! an outgoing connection), and its start then fails saying so; the
//! testkit's servers start again on other ports when that happens. A
//! [`DeadPort`] has no such window: it stays bound for as long as it lives.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;

/// `N` distinct free TCP ports on 127.0.0.1 (all chosen while the others
/// are still held, so no two are the same).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free loopback port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("a bound port").port())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let [port] = free_ports::<1>();
    port
}

/// A TCP port on 127.0.0.1 that refuses every connection for as long as
/// this value lives: bound but never listening, and without `SO_REUSEADDR`,
/// so no server (whose listeners set it) can bind the port meanwhile. For
/// tests of an unreachable endpoint, master or minion.
#[derive(Debug)]
pub struct DeadPort {
    /// Held, never listened on.
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl DeadPort {
    /// Binds a free port and holds it; panics when no socket can be had.
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("a free loopback port");
        let port = socket.local_addr().expect("a bound port").port();
        DeadPort {
            _socket: socket,
            port,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: an endpoint URL that cannot be reached.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Default for DeadPort {
    fn default() -> Self {
        Self::new()
    }
}

/// The `/proc/<pid>` directories of the processes in group `pgid` that are
/// not zombies (from `/proc/<pid>/stat`: the state is field 3, the group
/// field 5).
pub(crate) fn group_members(pgid: i32) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgid = pgid.to_string();
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|dir| {
            let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
                return false;
            };
            // The command name (field 2) is in parentheses and may hold spaces.
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            matches!(fields.as_slice(), [state, _ppid, pgrp, ..]
                if *pgrp == pgid && !matches!(*state, "Z" | "X"))
        })
        .collect()
}

/// Whether a process of group `pgid` holds the socket listening on
/// 127.0.0.1:`port` (its inode, from `/proc/net/tcp`, among the group's
/// open files): a server the test started is ready, not another that took
/// its port first (which a connection alone could reach).
pub fn group_listens_on(pgid: i32, port: u16) -> bool {
    let Some(inode) = listening_inode(port) else {
        return false;
    };
    let socket = format!("socket:[{inode}]");
    group_members(pgid).iter().any(|dir| {
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            return false;
        };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == socket.as_str()))
    })
}

/// The inode of the socket listening on 127.0.0.1:`port`, from
/// `/proc/net/tcp` (addresses in hex, the IPv4 one in the host's byte
/// order; state `0A` is LISTEN; the inode is field 10).
fn listening_inode(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(
        "{:08X}:{port:04X}",
        u32::from_ne_bytes(std::net::Ipv4Addr::LOCALHOST.octets())
    );
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, address, _, "0A", _, _, _, _, _, inode, ..] if *address == local => {
                Some(inode.to_string())
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_asked_for_together_are_distinct() {
        for _ in 0..50 {
            let ports = free_ports::<4>();
            let mut sorted = ports.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 4, "{ports:?}");
        }
    }

    #[test]
    fn a_dead_port_refuses_connections_and_cannot_be_bound() {
        let dead = DeadPort::new();
        let e = std::net::TcpStream::connect(("127.0.0.1", dead.port())).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        // What a server does (std and tokio listeners, Python's, ZeroMQ's all
        // set SO_REUSEADDR): the port is not to be had.
        let e = TcpListener::bind(("127.0.0.1", dead.port())).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    }

    /// Readiness: the listener on a port is found among a group's files,
    /// and only there.
    #[test]
    fn a_listening_port_is_found_in_its_owners_group_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // SAFETY: getpgrp has no preconditions.
        let own = unsafe { libc::getpgrp() };
        assert!(listening_inode(port).is_some());
        assert!(group_listens_on(own, port));
        assert!(
            !group_listens_on(1, port),
            "init's group holds no such socket"
        );
        let dead = DeadPort::new();
        assert_eq!(listening_inode(dead.port()), None, "bound, not listening");
        assert!(!group_listens_on(own, dead.port()));
    }
}
