//! A fault-injecting TCP proxy between researchers and a node: partitions, delays, dropped responses.
//!
//! The consortium directory lists the proxy's address instead of the
//! node's, so every byte between a researcher and that node crosses the
//! proxy. Noise encrypts the stream end to end; the proxy only decides
//! whether, when and in which direction bytes move. Threads are bounded by
//! the connections a test opens; the proxy stops when dropped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Accept connections but move no bytes either way (a network partition: peers time out).
    Partition,
    /// Refuse: close every new connection at once (the node looks down).
    Refuse,
    /// Hold every chunk this long before forwarding it.
    Delay(Duration),
    /// Forward requests but drop every response byte.
    DropResponses,
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let proxy = Proxy {
            addr: listener.local_addr()?,
            fault: Arc::new(Mutex::new(Fault::None)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (fault, stop) = (proxy.fault.clone(), proxy.stop.clone());
        thread::spawn(move || accept_loop(listener, target, fault, stop));
        Ok(proxy)
    }

    /// The address to publish.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the fault for connections and chunks from now on.
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    fn current(fault: &Mutex<Fault>) -> Fault {
        *fault.lock().expect("fault lock")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                if Proxy::current(&fault) == Fault::Refuse {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let (fault, stop) = (fault.clone(), stop.clone());
                thread::spawn(move || connect_pair(client, target, fault, stop));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn connect_pair(
    client: TcpStream,
    target: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    stop: Arc<AtomicBool>,
) {
    let Ok(node) = TcpStream::connect(target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = node.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (c2, n2) = match (client.try_clone(), node.try_clone()) {
        (Ok(c), Ok(n)) => (c, n),
        _ => return,
    };
    let (f2, s2) = (fault.clone(), stop.clone());
    thread::spawn(move || pump(c2, n2, Direction::Request, f2, s2));
    pump(node, client, Direction::Response, fault, stop);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// Copies `from` to `to`, applying the fault to each chunk.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    direction: Direction,
    fault: Arc<Mutex<Fault>>,
    stop: Arc<AtomicBool>,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        match Proxy::current(&fault) {
            Fault::Partition => continue,
            Fault::DropResponses if direction == Direction::Response => continue,
            Fault::Delay(d) => thread::sleep(d),
            _ => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
