//! Python peers the protocol tests run with the venv's interpreter: a gRPC
//! server and client (grpcio generic handlers, raw bytes) and a FIX acceptor
//! and initiator (simplefix).

pub const GRPC_SERVER: &str = r#"
import sys
from concurrent import futures
import grpc

def say(request, context):
    return b"pong:" + request

handler = grpc.method_handlers_generic_handler(
    "wiretrail.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:%d" % int(sys.argv[1]))
server.start()
print("ready", flush=True)
server.wait_for_termination(timeout=120)
"#;

pub const GRPC_CLIENT: &str = r#"
import sys
import grpc

with grpc.insecure_channel("127.0.0.1:%d" % int(sys.argv[1]), options=[("grpc.enable_http_proxy", 0)]) as ch:
    say = ch.unary_unary("/wiretrail.test.Echo/Say")
    for i in (1, 2):
        print(say(b"ping-%d" % i, timeout=10).decode(), flush=True)
"#;

pub const FIX_COMMON: &str = r#"
import socket, sys, time
import simplefix

class Session:
    def __init__(self, sock, sender, target):
        self.sock, self.sender, self.target = sock, sender, target
        self.seq = 0
        self.parser = simplefix.FixParser()
        self.sent = bytearray()
        self.received = bytearray()

    def build(self, msg_type, fields):
        self.seq += 1
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_pair(56, self.target, header=True)
        m.append_pair(34, self.seq, header=True)
        m.append_utc_timestamp(52, header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        return m.encode()

    def send_raw(self, data):
        self.sock.sendall(data)
        self.sent += data

    def send(self, msg_type, fields=()):
        self.send_raw(self.build(msg_type, fields))

    def recv(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = self.parser.get_message()
            if m is not None:
                return m
            data = self.sock.recv(65536)
            if not data:
                return None
            self.received += data
            self.parser.append_buffer(data)
        raise TimeoutError("no FIX message")

def checksum_ok(m):
    data = m.encode(raw=True)
    body, _, tail = data.rpartition(b"10=")
    return tail[:3] == b"%03d" % (sum(body) % 256)
"#;

pub const FIX_ACCEPTOR: &str = r#"
port, out = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)
srv.settimeout(60)
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(20)
s = Session(conn, "EXCH", "CLIENT")
seen = []
for _ in range(100):
    m = s.recv()
    if m is None:
        break
    t = m.get(35).decode()
    if not checksum_ok(m):
        seen.append("garbled")  # a garbled message is ignored (FIX session rules)
        continue
    seen.append(t)
    if t == "A":
        s.send("A", [(98, 0), (108, 30)])
    elif t == "D":
        s.send("8", [(37, "EX-1"), (11, m.get(11).decode()), (17, "EXEC-1"), (150, "0"), (39, "0"),
                     (55, m.get(55).decode()), (54, m.get(54).decode()), (38, m.get(38).decode()),
                     (151, m.get(38).decode()), (14, 0), (6, 0)])
    elif t == "5":
        s.send("5", [(58, "logout acknowledged")])
        break
conn.close()
open(out, "w").write(" ".join(seen))
"#;

pub const FIX_INITIATOR: &str = r#"
port, out = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
s = Session(sock, "CLIENT", "EXCH")
got = []
s.send("A", [(98, 0), (108, 30)])
got.append(s.recv().get(35).decode())
order = [(11, "ORD-1"), (55, "WTRL"), (54, 1), (38, 100), (40, 2), (44, "12.34")]
s.send("D", order + [(60, "20260101-00:00:00.000")])
got.append(s.recv().get(35).decode())
s.send("0")
# A NewOrderSingle whose CheckSum is wrong, sent as raw bytes.
data = s.build("D", [(11, "ORD-BAD"), (55, "WTRL"), (54, 2), (38, 5), (40, 1)])
good = int(data[-4:-1])
s.send_raw(data[:-4] + b"%03d\x01" % ((good + 1) % 256))
s.send("5", [(58, "done")])
got.append(s.recv().get(35).decode())
sock.close()
open(out + ".sent", "wb").write(s.sent)
open(out + ".received", "wb").write(s.received)
print(" ".join(got), flush=True)
"#;

/// A FIX acceptor that checks MsgSeqNum like a FIX engine: on a gap it sends
/// a ResendRequest (BeginSeqNo = expected, EndSeqNo = 0) and ignores the
/// message; a SequenceReset-GapFill moves the expected number; possible
/// duplicates at the expected number are processed. Writes what it did.
pub const FIX_GAP_ACCEPTOR: &str = r#"
port, out = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)
srv.settimeout(60)
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(20)
s = Session(conn, "EXCH", "CLIENT")
expected, seen = 1, []
for _ in range(100):
    m = s.recv()
    if m is None:
        break
    t, seq = m.get(35).decode(), int(m.get(34))
    if t == "4" and m.get(123) == b"Y":
        expected = int(m.get(36))
        seen.append("fill:%d" % expected)
        continue
    if seq > expected:
        seen.append("gap:%d" % expected)
        s.send("2", [(7, expected), (16, 0)])
        continue
    expected = seq + 1
    seen.append(t + ("(dup)" if m.get(43) == b"Y" else ""))
    if t == "A":
        s.send("A", [(98, 0), (108, 30)])
    elif t == "D":
        s.send("8", [(37, "EX-%d" % seq), (11, m.get(11).decode()), (17, "EXEC-%d" % seq), (150, "0"), (39, "0"),
                     (55, "WTRL"), (54, "1"), (38, "100"), (151, "100"), (14, 0), (6, 0)])
    elif t == "5":
        s.send("5", [(58, "logout acknowledged")])
        break
conn.close()
open(out, "w").write(" ".join(seen))
"#;

/// A FIX initiator that skips MsgSeqNum 3 (a heartbeat it "lost"), answers
/// the acceptor's ResendRequest with a SequenceReset-GapFill over 3 and the
/// order at 4 again with PossDupFlag and OrigSendingTime, then logs out.
pub const FIX_GAP_INITIATOR: &str = r#"
port, out = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
s = Session(sock, "CLIENT", "EXCH")
got = []
def expect(t):
    m = s.recv()
    got.append(m.get(35).decode())
    assert got[-1] == t, got
    return m
s.send("A", [(98, 0), (108, 30), (50, "DESK1")])
expect("A")
s.send("D", [(11, "ORD-1"), (55, "WTRL"), (54, 1), (38, 100), (40, 2), (44, "12.34")])
expect("8")
s.seq += 1  # MsgSeqNum 3 is never sent
order2 = [(11, "ORD-2"), (55, "WTRL"), (54, 1), (38, 100), (40, 2), (44, "12.35")]
s.send("D", order2)
rr = expect("2")
assert (rr.get(7), rr.get(16)) == (b"3", b"0"), rr
def resend(seq, msg_type, fields):
    m = simplefix.FixMessage()
    for tag, value in [(8, "FIX.4.4"), (35, msg_type), (49, "CLIENT"), (56, "EXCH"), (34, seq), (43, "Y")]:
        m.append_pair(tag, value, header=True)
    m.append_utc_timestamp(52, header=True)
    m.append_pair(122, "20260101-00:00:00.000", header=True)
    for tag, value in fields:
        m.append_pair(tag, value)
    s.send_raw(m.encode())
resend(3, "4", [(123, "Y"), (36, 4)])
resend(4, "D", order2)
expect("8")
s.send("5", [(58, "done")])
expect("5")
sock.close()
open(out + ".sent", "wb").write(s.sent)
open(out + ".received", "wb").write(s.received)
print(" ".join(got), flush=True)
"#;
