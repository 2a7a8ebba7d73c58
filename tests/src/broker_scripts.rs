//! Client scripts of the database and broker tests, run with the venv's
//! Python (psycopg 3, PyMySQL, pika, nats-py, paho-mqtt) or Debian's Perl
//! (DBD::MariaDB, for server-side prepared statements over the binary
//! protocol). Each prints what it got back so the test can check the
//! conversation really happened; arguments are the port and the password.

/// psycopg 3: text parameters (`%s`), binary parameters (`%b`) of several
/// types, and a named prepared statement executed twice (the second time
/// with Bind/Execute only).
pub const PSYCOPG: &str = r#"
import sys, datetime, decimal, uuid
import psycopg
port = int(sys.argv[1])
conn = psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable gssencmode=disable application_name=wt-psycopg", autocommit=True)
with conn.cursor() as cur:
    cur.execute("CREATE TABLE orders (clordid text, qty int8, px numeric, at timestamptz, id uuid, ok bool)")
    cur.execute("INSERT INTO orders (clordid, qty) VALUES (%s, %s)", ("ORD-T1", 100))
    cur.execute(
        "INSERT INTO orders (clordid, qty, px, at, id, ok) VALUES (%b, %b, %b, %b, %b, %b)",
        ("ORD-B1", 250, decimal.Decimal("187.25"),
         datetime.datetime(2026, 11, 21, 13, 5, 9, 123400, tzinfo=datetime.timezone.utc),
         uuid.UUID("12345678-9abc-def0-0001-020304050607"), True))
    for clordid in ("ORD-B1", "ORD-T1"):
        cur.execute("SELECT qty FROM orders WHERE clordid = %s", (clordid,), prepare=True)
        print(clordid, cur.fetchone()[0])
conn.close()
"#;

/// PyMySQL (COM_QUERY only: it interpolates parameters client side): an
/// INSERT, a SELECT, SQL-level server-side prepared statements (PREPARE /
/// EXECUTE USING), a failing query, COM_INIT_DB, COM_QUIT.
pub const PYMYSQL: &str = r#"
import sys
import pymysql
port, password = int(sys.argv[1]), sys.argv[2]
conn = pymysql.connect(host="127.0.0.1", port=port, user="trader", password=password, database="ledger", program_name="wt-pymysql")
with conn.cursor() as cur:
    cur.execute("INSERT INTO orders (clordid, qty, px) VALUES (%s, %s, %s)", ("ORD-PY-1", 100, "187.25"))
    conn.commit()
    cur.execute("SELECT clordid, qty, px FROM orders WHERE clordid = %s", ("ORD-PY-1",))
    print(cur.fetchall())
    cur.execute("PREPARE wt_sel FROM 'SELECT qty FROM orders WHERE clordid = ?'")
    cur.execute("SET @c = 'ORD-PY-1'")
    cur.execute("EXECUTE wt_sel USING @c")
    print(cur.fetchall())
    try:
        cur.execute("SELECT * FROM wiretrail_missing")
    except pymysql.err.ProgrammingError as e:
        print("error", e.args[0])
conn.select_db("ledger")
conn.close()
"#;

/// DBD::MariaDB (libmariadb) with server-side prepared statements: COM_STMT_PREPARE,
/// COM_STMT_EXECUTE with typed parameters, binary result rows, COM_STMT_CLOSE.
pub const DBD_MARIADB: &str = r#"
use strict; use warnings; use DBI;
my ($port, $password) = @ARGV;
my $dbh = DBI->connect("DBI:MariaDB:database=ledger;host=127.0.0.1;port=$port;mariadb_server_prepare=1;mariadb_server_prepare_disable_fallback=1",
    "trader", $password, {RaiseError => 1, AutoCommit => 1, PrintError => 0});
my $ins = $dbh->prepare("INSERT INTO orders (clordid, qty, px) VALUES (?, ?, ?)");
$ins->bind_param(1, "ORD-PS-1");
$ins->bind_param(2, 250, DBI::SQL_INTEGER);
$ins->bind_param(3, "187.25");
$ins->execute();
undef $ins;
my $sel = $dbh->prepare("SELECT clordid, qty FROM orders WHERE qty >= ? ORDER BY clordid");
$sel->execute(200);
while (my @r = $sel->fetchrow_array) { print join(",", @r), "\n"; }
undef $sel;
$dbh->disconnect;
"#;

/// pika: confirm mode, a queue, a publish with properties and headers (acked
/// by the broker), its delivery acked by the consumer, a second message nacked.
pub const PIKA: &str = r#"
import sys
import pika
port = int(sys.argv[1])
params = pika.ConnectionParameters(host="127.0.0.1", port=port, virtual_host="/",
                                   credentials=pika.PlainCredentials("guest", "guest"), heartbeat=0)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare("wt.orders", auto_delete=True)
props = pika.BasicProperties(message_id="msg-1", correlation_id="corr-1", content_type="application/json",
                             headers={"desk": "rates", "attempt": 2}, delivery_mode=2)
ch.basic_publish("", "wt.orders", b'{"clordid":"ORD-1","qty":100}', props)
ch.basic_publish("", "wt.orders", b'{"clordid":"ORD-2","qty":5}', pika.BasicProperties(message_id="msg-2"))
seen = []
for method, p, body in ch.consume("wt.orders", inactivity_timeout=20):
    if method is None:
        break
    if p.message_id == "msg-1":
        ch.basic_ack(method.delivery_tag)
    else:
        ch.basic_nack(method.delivery_tag, requeue=False)
    seen.append(p.message_id)
    if len(seen) == 2:
        break
ch.cancel()
conn.close()
print(" ".join(seen))
"#;

/// nats-py: a queue subscription, a publish with a reply subject, a publish
/// with headers (HPUB/HMSG), both delivered back, a flush (PING/PONG).
pub const NATS_PY: &str = r#"
import asyncio, sys
import nats
async def main():
    nc = await nats.connect(f"nats://127.0.0.1:{sys.argv[1]}", user="trader", password=sys.argv[2], name="wt-pricer")
    sub = await nc.subscribe("rates.*", queue="pricers")
    await nc.publish("rates.eurusd", b'{"px":"1.0842"}', reply="rates.replies")
    await nc.publish("rates.gbpusd", b'{"px":"1.2650"}', headers={"Desk": "fx"})
    for _ in range(2):
        m = await sub.next_msg(timeout=10)
        print(m.subject, m.data.decode())
    await nc.flush()
    await nc.close()
asyncio.run(main())
"#;

/// paho-mqtt (MQTT 3.1.1 or 5 by argument): CONNECT with user and password,
/// SUBSCRIBE QoS 1, PUBLISH QoS 1 (delivered back), PUBLISH QoS 2, DISCONNECT.
pub const PAHO: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, password, v5 = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "5"
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wt-pricer-v" + sys.argv[3],
                protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
c.username_pw_set("trader", password)
got, subbed = threading.Event(), threading.Event()
c.on_message = lambda cl, u, m: (print(m.topic, m.payload.decode(), flush=True), got.set())
c.on_subscribe = lambda *a: subbed.set()
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
c.subscribe("rates/eurusd", qos=1)
assert subbed.wait(10), "no SUBACK"
props = None
if v5:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.UserProperty = [("desk", "rates")]
c.publish("rates/eurusd", b'{"px":"1.0842"}', qos=1, properties=props).wait_for_publish(10)
assert got.wait(10), "no delivery"
c.publish("rates/gbpusd", b'{"px":"1.2650"}', qos=2).wait_for_publish(10)
c.disconnect()
c.loop_stop()
"#;
