//! Real packets made by real tools: `dumpcap` (from Debian's tshark
//! packages) records loopback traffic that carries a known marker in HTTP,
//! DNS, UDP, ICMP and IPv6 payloads, so tests can prove the marker never
//! leaves the agent, reaches the store or comes out of an export.
//!
//! These helpers assume the tools are there: a test calling them first
//! checks with [`crate::require_tool`] (`dumpcap`, `tshark`, `ping`), which
//! skips it, or fails it under CI, when one is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};

/// The marker carried in every payload. Eight printable bytes that occur in
/// no header.
pub const MARKER: &[u8] = b"GLMPSECRET";
/// The marker as hex, for `ping -p` (which takes at most 16 bytes).
const MARKER_HEX: &str = "474c4d50534543524554";

fn run(cmd: &mut Command) {
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "{cmd:?} failed ({status:?}); .ci/run installs iputils-ping and tshark, and `require_tool` checks for them"
    );
}

/// Records loopback traffic carrying [`MARKER`] into `out` (pcapng) and
/// returns how many packets were sent on purpose (a lower bound of what
/// the file holds).
pub fn record_marked_traffic(out: &Path) -> usize {
    let http = TcpListener::bind("127.0.0.1:0").expect("tcp listener");
    let udp4 = UdpSocket::bind("127.0.0.1:0").expect("udp4");
    let udp6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("udp6 on ::1");
    let dns = UdpSocket::bind("127.0.0.1:0").expect("dns");
    let fence = UdpSocket::bind("127.0.0.1:0").expect("fence");
    let ports = [
        http.local_addr().unwrap().port(),
        udp4.local_addr().unwrap().port(),
        udp6.local_addr().unwrap().port(),
        dns.local_addr().unwrap().port(),
        fence.local_addr().unwrap().port(),
    ];
    let filter = format!(
        "tcp port {} or udp port {} or udp port {} or udp port {} or udp port {} or icmp or icmp6",
        ports[0], ports[1], ports[2], ports[3], ports[4]
    );
    let mut dumpcap = Command::new("dumpcap")
        .args(["-i", "lo", "-q", "-f", &filter, "-w"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dumpcap runs (apt-get install tshark; capturing needs root or CAP_NET_RAW)");
    // dumpcap says "Capturing on ..." once the capture is live.
    let mut stderr = BufReader::new(dumpcap.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("Capturing on") {
        line.clear();
        if stderr.read_line(&mut line).expect("dumpcap stderr") == 0 {
            panic!("dumpcap exited before capturing");
        }
    }

    // "Capturing on" comes a moment before the capture is live: send
    // fence packets until one is in the file.
    wait_for_fence(out, &fence, b"start");

    // HTTP over TCP, both directions.
    let server = std::thread::spawn(move || {
        let (mut conn, _) = http.accept().expect("accept");
        let mut request = [0u8; 512];
        let _ = conn.read(&mut request);
        let body =
            format!("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Token: {}\r\n\r\n", String::from_utf8_lossy(MARKER));
        conn.write_all(body.as_bytes()).unwrap();
        conn.write_all(MARKER).unwrap();
    });
    let mut client = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], ports[0]))).expect("connect");
    let request = format!(
        "GET /{m} HTTP/1.1\r\nHost: {m}.example\r\nCookie: session={m}\r\n\r\n",
        m = String::from_utf8_lossy(MARKER)
    );
    client.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = client.read_to_end(&mut response);
    server.join().unwrap();

    // A DNS query for a name containing the marker.
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in [MARKER, b"example".as_slice()] {
        query.push(label.len() as u8);
        query.extend_from_slice(label);
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&query, dns.local_addr().unwrap()).unwrap();
    // Plain UDP over IPv4 and IPv6.
    sender.send_to(MARKER, udp4.local_addr().unwrap()).unwrap();
    let sender6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    sender6.send_to(MARKER, udp6.local_addr().unwrap()).unwrap();
    // ICMP and ICMPv6 echo with the marker as the pattern.
    run(Command::new("ping").args(["-c", "1", "-W", "2", "-p", MARKER_HEX, "127.0.0.1"]));
    run(Command::new("ping").args(["-6", "-c", "1", "-W", "2", "-p", MARKER_HEX, "::1"]));

    // Loopback delivers in order: once a fence sent after everything is in
    // the file, so is everything before it.
    wait_for_fence(out, &fence, b"end");
    run(Command::new("kill").args(["-INT", &dumpcap.id().to_string()]));
    let _ = dumpcap.wait();
    // 3-way handshake, request, response, FINs (>= 8), DNS, 2 UDP, 2x2 pings, 2+ fences.
    8 + 1 + 2 + 4 + 2
}

/// Sends `tag` to the fence socket until tshark finds it in `file`.
fn wait_for_fence(file: &Path, fence: &UdpSocket, tag: &[u8]) {
    let target = fence.local_addr().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let filter = format!("udp.dstport == {} && udp.payload == {}", target.port(), hex(tag));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        sender.send_to(tag, target).unwrap();
        let seen = Command::new("tshark")
            .arg("-r")
            .arg(file)
            .args(["-Y", &filter])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        if seen {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dumpcap never recorded the {:?} fence",
            String::from_utf8_lossy(tag)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// What `tshark -r FILE` prints, one line per packet.
pub fn tshark_lines(file: &Path) -> Vec<String> {
    let output = Command::new("tshark").arg("-r").arg(file).output().expect("tshark runs");
    assert!(output.status.success(), "tshark failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

/// Whether `haystack` contains `needle` anywhere.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
