//! Accepting connections for the API: bounded in number, with a deadline on each request's headers, in plain HTTP on loopback or TLS beyond it.
//!
//! axum's own `serve` sets no header-read deadline and no connection bound,
//! so one slow client per connection could hold the node's sockets open
//! forever. This loop is axum's with those limits:
//! * at most [`Limits::max_connections`] connections at once; the next one
//!   waits in the kernel's backlog until one closes;
//! * a TLS handshake must finish within [`Limits::handshake`];
//! * a request's headers must arrive within [`Limits::header_read`], or the
//!   connection is closed (hyper's `header_read_timeout`);
//! * a handler must produce its response head within [`Limits::respond`],
//!   or the client gets `408 request_timeout` (a body trickled byte by byte
//!   is covered by this too, since handlers read the body first);
//! * every write to the client must make progress within
//!   [`Limits::write_stall`], or the connection is closed: a client that
//!   stops reading (an alert stream it no longer drains, pipelined requests
//!   whose answers it never reads) cannot hold a connection slot forever.
//!
//! On shutdown the listener stops accepting and open connections get
//! [`Limits::drain`] to finish before the server returns.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::Service;

use crate::error::ApiError;

/// The transport's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a client to finish the TLS handshake.
    pub handshake: Duration,
    /// Time for a client to send a request's headers.
    pub header_read: Duration,
    /// Time for a handler to answer (reading the body included).
    pub respond: Duration,
    /// Time open connections get to finish at shutdown.
    pub drain: Duration,
    /// Time a write to the client may wait for the client to read.
    pub write_stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            respond: Duration::from_secs(30),
            drain: Duration::from_secs(5),
            write_stall: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` (through TLS when `tls` is given) until `shutdown` completes.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A connection that failed before it was accepted (reset, out of
                // descriptors): keep serving the others.
                Err(e) => {
                    tracing::warn!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let connection = Connection {
            router: router.clone(),
            remote,
            limits: limits.clone(),
        };
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            connection.run(stream, acceptor, watcher).await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("http: connections still open at shutdown were closed");
    }
    Ok(())
}

/// One accepted connection.
struct Connection {
    router: Router,
    remote: SocketAddr,
    limits: Limits,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        acceptor: Option<TlsAcceptor>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let _ = stream.set_nodelay(true);
        let stream = WriteDeadline::new(stream, self.limits.write_stall);
        match acceptor {
            None => self.serve_http(TokioIo::new(stream), watcher).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.handshake, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => self.serve_http(TokioIo::new(tls), watcher).await,
                    Ok(Err(e)) => tracing::debug!("tls handshake with {} failed: {e}", self.remote),
                    Err(_) => tracing::debug!("tls handshake with {} timed out", self.remote),
                }
            }
        }
    }

    async fn serve_http<I>(self, io: I, watcher: hyper_util::server::graceful::Watcher)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Connection {
            router,
            remote,
            limits,
        } = self;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // Handlers see the peer's address the way axum's own serve gives it.
            request.extensions_mut().insert(ConnectInfo(remote));
            let mut router = router.clone();
            let respond = limits.respond;
            async move {
                match tokio::time::timeout(respond, router.call(request)).await {
                    Ok(response) => response,
                    Err(_) => Ok(axum::response::IntoResponse::into_response(
                        ApiError::Timeout,
                    )),
                }
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read);
        let served = watcher.watch(builder.serve_connection(io, service));
        if let Err(e) = served.await {
            tracing::debug!("http connection with {remote} ended: {e}");
        }
    }
}

/// A connection whose writes must make progress within a deadline (see the
/// module docs): a write or flush the client leaves pending for longer fails
/// with `TimedOut`, which ends the connection and frees its slot.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits; disarmed by any write that completes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a completed write through; a pending one waits at most until the deadline.
    fn within<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.within(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.within(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.within(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.within(cx, polled)
    }
}
