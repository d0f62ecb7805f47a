//! Inbound connection limits per remote IP address, as a libp2p `NetworkBehaviour`.
//!
//! libp2p's `connection_limits` bounds connections in total and per peer id,
//! but a peer id costs nothing to make: one host can open a connection under
//! a fresh identity every time. This behaviour counts inbound connections by
//! the remote IP address instead, both pending (TCP accepted, Noise
//! handshake not finished) and established, and denies a connection beyond
//! either limit before any work is done for it. Counts follow the swarm's
//! own events (`ConnectionEstablished`, `ConnectionClosed`, `ListenFailure`),
//! so a connection another behaviour denies is not counted.
//!
//! It also remembers the remote IP of every established inbound connection,
//! so that the node can bound the work in flight per source address.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint, Multiaddr};
use libp2p::swarm::behaviour::{ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;

/// Limits per remote IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Inbound connections still in their handshake, per remote IP.
    pub max_pending_per_ip: usize,
    /// Established inbound connections per remote IP.
    pub max_established_per_ip: usize,
}

/// Why a connection was denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ip} already has {count} {kind} connections, the limit per address; close some and retry")]
pub struct Exceeded {
    /// The remote address.
    pub ip: IpAddr,
    /// What was counted: "pending" or "established".
    pub kind: &'static str,
    /// How many it has.
    pub count: usize,
}

/// Counts inbound connections per remote IP and denies those over the limits.
#[derive(Debug)]
pub struct Behaviour {
    config: Config,
    pending: HashMap<ConnectionId, IpAddr>,
    pending_per_ip: HashMap<IpAddr, usize>,
    established: HashMap<ConnectionId, IpAddr>,
    established_per_ip: HashMap<IpAddr, usize>,
}

impl Behaviour {
    /// A behaviour enforcing `config`.
    pub fn new(config: Config) -> Behaviour {
        Behaviour {
            config,
            pending: HashMap::new(),
            pending_per_ip: HashMap::new(),
            established: HashMap::new(),
            established_per_ip: HashMap::new(),
        }
    }

    /// The remote IP of an established inbound connection.
    pub fn remote_ip(&self, connection: ConnectionId) -> Option<IpAddr> {
        self.established.get(&connection).copied()
    }

    /// Established inbound connections from `ip` now.
    pub fn established_from(&self, ip: IpAddr) -> usize {
        self.established_per_ip.get(&ip).copied().unwrap_or(0)
    }

    fn forget_pending(&mut self, connection: ConnectionId) {
        if let Some(ip) = self.pending.remove(&connection) {
            decrement(&mut self.pending_per_ip, ip);
        }
    }
}

/// The IP address of a TCP (or any IP) multiaddr.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

fn decrement(counts: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(count) = counts.get_mut(&ip) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&ip);
        }
    }
}

fn check(
    counts: &HashMap<IpAddr, usize>,
    ip: IpAddr,
    limit: usize,
    kind: &'static str,
) -> Result<(), ConnectionDenied> {
    let count = counts.get(&ip).copied().unwrap_or(0);
    if count >= limit {
        return Err(ConnectionDenied::new(Exceeded { ip, kind, count }));
    }
    Ok(())
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // A transport without an IP address (none in witmed) is not limited here.
        let Some(ip) = ip_of(remote_addr) else {
            return Ok(());
        };
        check(
            &self.pending_per_ip,
            ip,
            self.config.max_pending_per_ip,
            "pending",
        )?;
        self.pending.insert(connection_id, ip);
        *self.pending_per_ip.entry(ip).or_insert(0) += 1;
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.forget_pending(connection_id);
        if let Some(ip) = ip_of(remote_addr) {
            check(
                &self.established_per_ip,
                ip,
                self.config.max_established_per_ip,
                "established",
            )?;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                connection_id,
                endpoint: ConnectedPoint::Listener { send_back_addr, .. },
                ..
            }) => {
                self.forget_pending(connection_id);
                if let Some(ip) = ip_of(send_back_addr) {
                    self.established.insert(connection_id, ip);
                    *self.established_per_ip.entry(ip).or_insert(0) += 1;
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(ip) = self.established.remove(&connection_id) {
                    decrement(&mut self.established_per_ip, ip);
                }
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.forget_pending(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str, port: u16) -> Multiaddr {
        format!("/ip4/{ip}/tcp/{port}").parse().unwrap()
    }

    fn local() -> Multiaddr {
        addr("127.0.0.1", 4001)
    }

    fn limits(pending: usize, established: usize) -> Behaviour {
        Behaviour::new(Config {
            max_pending_per_ip: pending,
            max_established_per_ip: established,
        })
    }

    #[test]
    fn pending_connections_are_limited_per_address_and_freed_on_failure() {
        let mut b = limits(2, 10);
        let attacker = addr("127.0.0.2", 5000);
        let (c1, c2, c3) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        assert!(b
            .handle_pending_inbound_connection(c1, &local(), &attacker)
            .is_ok());
        assert!(b
            .handle_pending_inbound_connection(c2, &local(), &attacker)
            .is_ok());
        assert!(b
            .handle_pending_inbound_connection(c3, &local(), &attacker)
            .is_err());
        // Another address is not affected.
        assert!(b
            .handle_pending_inbound_connection(c3, &local(), &addr("127.0.0.1", 6000))
            .is_ok());
        // A handshake that times out frees its place.
        b.forget_pending(c1);
        assert!(b
            .handle_pending_inbound_connection(ConnectionId::new_unchecked(4), &local(), &attacker)
            .is_ok());
    }

    #[test]
    fn established_connections_are_limited_per_address() {
        let mut b = limits(10, 1);
        let attacker = addr("127.0.0.2", 5000);
        let peer = PeerId::random();
        let c1 = ConnectionId::new_unchecked(1);
        assert!(b
            .handle_established_inbound_connection(c1, peer, &local(), &attacker)
            .is_ok());
        b.established.insert(c1, "127.0.0.2".parse().unwrap());
        b.established_per_ip.insert("127.0.0.2".parse().unwrap(), 1);
        let other = PeerId::random();
        assert!(b
            .handle_established_inbound_connection(
                ConnectionId::new_unchecked(2),
                other,
                &local(),
                &attacker
            )
            .is_err());
        assert_eq!(b.remote_ip(c1), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(b.established_from("127.0.0.1".parse().unwrap()), 0);
    }
}
