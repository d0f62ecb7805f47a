//! A small blocking HTTP/1.1 client over one kept-alive TCP connection: enough for a simulated device or a benchmark to talk to a node on loopback.
//!
//! No TLS (the node's API is loopback-only; a hospital puts a TLS proxy in front), no
//! redirects. Bodies are read by `Content-Length` or chunked encoding, at most
//! [`MAX_RESPONSE_BYTES`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response body accepted.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How long one request may wait for its answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(2000)
            .collect()
    }
}

/// One connection to a node's HTTP API, reopened when the server closed it.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    host: String,
    conn: Option<BufReader<TcpStream>>,
}

/// The `host:port` of an `http://host:port[/]` URL.
pub fn authority(url: &str) -> std::io::Result<&str> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        std::io::Error::other(format!(
            "{url:?} is not an http:// URL; give the node's API as http://127.0.0.1:4080"
        ))
    })?;
    Ok(rest.trim_end_matches('/').trim_end_matches("/api/v1"))
}

impl Client {
    /// A client for the node at `url` (`http://host:port`); connects on first use.
    pub fn new(url: &str) -> std::io::Result<Client> {
        let host = authority(url)?.to_string();
        let addr = host
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{host} resolves to no address")))?;
        Ok(Client {
            addr,
            host,
            conn: None,
        })
    }

    /// Sends one request and reads its response. A kept-alive connection the server had closed
    /// is reopened once (device batches are safe to resend: their sequence numbers make a
    /// second delivery a no-op).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let reused = self.conn.is_some();
        match self.try_send(method, path, headers, body) {
            Err(_) if reused => {
                self.conn = None;
                self.try_send(method, path, headers, body)
            }
            other => other,
        }
    }

    fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT)?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                stream.set_write_timeout(Some(TIMEOUT))?;
                stream.set_nodelay(true)?;
                BufReader::new(stream)
            }
        };
        let mut conn = conn;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.host,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = conn.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        let (response, keep) = read_response(&mut conn)?;
        if keep {
            self.conn = Some(conn);
        }
        Ok(response)
    }
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

fn read_line(conn: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    let n = conn.by_ref().take(8192).read_line(&mut line)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a response; also whether the connection may be reused.
fn read_response(conn: &mut impl BufRead) -> std::io::Result<(Response, bool)> {
    let status_line = read_line(conn)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("not an HTTP status line: {status_line:?}")))?;
    let (mut length, mut chunked, mut keep) = (None, false, true);
    for _ in 0..100 {
        let line = read_line(conn)?;
        if line.is_empty() {
            let body = match (chunked, length) {
                (true, _) => read_chunked(conn)?,
                (false, Some(n)) => read_exact(conn, n)?,
                (false, None) => {
                    keep = false;
                    let mut body = Vec::new();
                    conn.take(MAX_RESPONSE_BYTES as u64)
                        .read_to_end(&mut body)?;
                    body
                }
            };
            return Ok((Response { status, body }, keep));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("not a header line: {line:?}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(value.parse().map_err(|_| bad("bad content-length"))?)
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    Err(bad("more than 100 response headers"))
}

fn read_exact(conn: &mut impl BufRead, n: usize) -> std::io::Result<Vec<u8>> {
    if n > MAX_RESPONSE_BYTES {
        return Err(bad(format!("response of {n} bytes is over the limit")));
    }
    let mut body = vec![0; n];
    conn.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(conn: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(conn)?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers, then the blank line.
            while !read_line(conn)?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_RESPONSE_BYTES {
            return Err(bad("chunked response over the limit"));
        }
        body.extend(read_exact(conn, size)?);
        read_line(conn)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (Response, bool) {
        read_response(&mut std::io::Cursor::new(raw.as_bytes().to_vec())).unwrap()
    }

    #[test]
    fn reads_sized_and_chunked_bodies() {
        let (r, keep) = parse("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi");
        assert_eq!((r.status, r.body.as_slice(), keep), (200, &b"hi"[..], true));
        let (r, _) = parse("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        let (_, keep) = parse("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
        assert!(!keep);
    }

    #[test]
    fn refuses_garbage_and_oversized_answers() {
        let mut garbage = std::io::Cursor::new(b"SSH-2.0\r\n\r\n".to_vec());
        assert!(read_response(&mut garbage).is_err());
        let huge = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_RESPONSE_BYTES + 1
        );
        assert!(read_response(&mut std::io::Cursor::new(huge.into_bytes())).is_err());
        assert!(authority("https://x").is_err());
        assert_eq!(
            authority("http://127.0.0.1:4080/").unwrap(),
            "127.0.0.1:4080"
        );
    }
}
