//! Who holds a TCP or UDP port: `/proc/net/{tcp,tcp6,udp,udp6}` give the
//! socket inodes bound to a local port, and each process's `/proc/PID/fd`
//! links (`socket:[INODE]`) give their owners.
//!
//! A dual-stack listener shows only in the `*6` tables. Sockets in
//! `TIME_WAIT` have no inode (no owner) and are ignored. The tables are those
//! of this process's network namespace.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::str::FromStr;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (IPv4 and IPv6).
    Tcp,
    /// UDP (IPv4 and IPv6).
    Udp,
}

/// A declared port: `8080` (TCP), `53/udp`, `8443/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port {
    /// The port number (1 to 65535).
    pub number: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// A port declaration that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid port {0:?}: expected a number from 1 to 65535, optionally followed by /tcp or /udp"
)]
pub struct PortError(pub String);

impl FromStr for Port {
    type Err = PortError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || PortError(text.to_string());
        let (number, protocol) = match text.trim().split_once('/') {
            None => (text.trim(), Protocol::Tcp),
            Some((n, p)) if p.eq_ignore_ascii_case("tcp") => (n, Protocol::Tcp),
            Some((n, p)) if p.eq_ignore_ascii_case("udp") => (n, Protocol::Udp),
            Some(_) => return Err(err()),
        };
        let number: u16 = number.parse().map_err(|_| err())?;
        if number == 0 {
            return Err(err());
        }
        Ok(Self { number, protocol })
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::Tcp => write!(f, "{}/tcp", self.number),
            Protocol::Udp => write!(f, "{}/udp", self.number),
        }
    }
}

/// The socket inodes bound to each of `ports` (IPv4 and IPv6).
pub fn socket_inodes(ports: &[Port]) -> HashMap<u64, Port> {
    let mut out = HashMap::new();
    for (file, protocol) in [
        ("/proc/net/tcp", Protocol::Tcp),
        ("/proc/net/tcp6", Protocol::Tcp),
        ("/proc/net/udp", Protocol::Udp),
        ("/proc/net/udp6", Protocol::Udp),
    ] {
        let wanted: HashSet<u16> = ports
            .iter()
            .filter(|p| p.protocol == protocol)
            .map(|p| p.number)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for (port, inode) in parse_net_table(&text) {
            if inode != 0 && wanted.contains(&port) {
                out.insert(
                    inode,
                    Port {
                        number: port,
                        protocol,
                    },
                );
            }
        }
    }
    out
}

/// `(local port, inode)` of every socket in a `/proc/net/{tcp,udp}[6]` table.
fn parse_net_table(text: &str) -> impl Iterator<Item = (u16, u64)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = fields.get(1)?;
        let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
        let inode = fields.get(9)?.parse().ok()?;
        Some((port, inode))
    })
}

/// The processes holding any of `ports`: `(pid, port)` pairs, sorted by pid.
/// A socket shared by several processes lists each of them.
pub fn port_owners(ports: &[Port]) -> Vec<(i32, Port)> {
    let inodes = socket_inodes(ports);
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut owners = HashSet::new();
    for pid in crate::proc_table::pids().unwrap_or_default() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(port) = inodes.get(&inode) {
                owners.insert((pid, *port));
            }
        }
    }
    let mut out: Vec<(i32, Port)> = owners.into_iter().collect();
    out.sort_unstable_by_key(|(pid, port)| (*pid, port.number));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_declarations() {
        let tcp = |n| Port {
            number: n,
            protocol: Protocol::Tcp,
        };
        assert_eq!("8080".parse(), Ok(tcp(8080)));
        assert_eq!("8443/tcp".parse(), Ok(tcp(8443)));
        assert_eq!(
            "53/UDP".parse(),
            Ok(Port {
                number: 53,
                protocol: Protocol::Udp
            })
        );
        for bad in ["0", "65536", "http", "80/sctp", "", "-1", "80/"] {
            assert!(bad.parse::<Port>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_ports_and_inodes_from_a_net_table() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 06 00000000:00000000 03:00000F8D 00000000     0        0 0 3 0000000000000000";
        let rows: Vec<(u16, u64)> = parse_net_table(text).collect();
        assert_eq!(rows, vec![(8080, 12345), (8080, 0)]);
    }
}
