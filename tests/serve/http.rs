//! A small HTTP/1.1 client over `TcpStream` for the server tests: whole responses, and
//! server-sent events read one at a time (so a test can leave in the middle of a stream).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// No read in these tests should take this long; a hung server fails the test instead of
/// hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Body bytes read but not yet handed out as an event.
    pending: Vec<u8>,
    ended: bool,
}

/// Send a request with `Connection: close`; returns once the status and headers are in.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the server");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).expect("send the request");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    Response {
        status,
        headers,
        reader,
        chunked,
        pending: Vec::new(),
        ended: false,
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    send(addr, "GET", path, &[], "")
}

pub fn post(addr: SocketAddr, path: &str, body: &str) -> Response {
    send(addr, "POST", path, &[], body)
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next piece of the body, or `None` at its end.
    fn read_piece(&mut self) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        if !self.chunked {
            self.ended = true;
            let mut rest = Vec::new();
            self.reader.read_to_end(&mut rest).expect("read the body");
            return Some(rest);
        }
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("chunk size");
        let size = usize::from_str_radix(line.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).expect("chunk data");
        chunk.truncate(size);
        if size == 0 {
            self.ended = true;
            return None;
        }
        Some(chunk)
    }

    /// The whole (remaining) body as text.
    pub fn text(mut self) -> String {
        let mut all = std::mem::take(&mut self.pending);
        while let Some(p) = self.read_piece() {
            all.extend_from_slice(&p);
        }
        String::from_utf8(all).expect("UTF-8 body")
    }

    pub fn json(self) -> serde_json::Value {
        let text = self.text();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
    }

    /// The payload of the next server-sent event's `data:` line, or `None` at the end.
    pub fn next_event(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.pending.drain(..at + 2).collect();
                let event = String::from_utf8(event).expect("UTF-8 event");
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or_else(|| panic!("event without data: {event:?}"));
                return Some(data.to_string());
            }
            let piece = self.read_piece()?;
            self.pending.extend_from_slice(&piece);
        }
    }
}

/// A running `powerinfer serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Start the binary with `args` on a free loopback port; returns when it accepts
    /// connections (it prints its address, then `/health` answers).
    pub fn start(model: &std::path::Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_powerinfer"))
            .arg("serve")
            .arg("-m")
            .arg(model)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start powerinfer serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("read the server's first line");
        let addr: SocketAddr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in the server's output {line:?}"));
        assert!(addr.ip().is_loopback(), "binds to loopback by default");
        let server = Server { child, addr };
        assert_eq!(get(addr, "/health").status, 200);
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
