//! End to end, as root: Debian's rabbitmq-server, nats-server and mosquitto
//! (each started once for this test binary, on loopback ports they pick)
//! with real clients from PyPI (pika, nats-py, paho-mqtt); the agent's AMQP,
//! NATS and MQTT records checked field by field, payloads byte for byte, and
//! both sides of each connection tiling the captured streams.
use std::process::{Command, Stdio};

use serde_json::Value;
mod support;

use support::brokers::{fields, *};
use support::*;
use wiretrail_tests::{
    agent::Agent,
    broker_scripts::{NATS_PY, PAHO, PIKA},
    peers::venv_python,
    require_root, serial,
    servers::{PASSWORD, mosquitto, nats, rabbitmq},
};

/// Runs a Python client script under a fresh agent; returns the records, the
/// client's pid and its stdout.
fn capture(script: &str, args: &[String]) -> (Records, u32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_script(dir.path(), "client.py", script);
    let agent = Agent::start(&[]);
    let child = Command::new(venv_python())
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(SETTLE);
    let recs = Records::parse(&agent.stop().0);
    (recs, pid, stdout)
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a Value> {
    headers.as_array()?.iter().find(|h| h["name"] == name)
}

#[test]
fn pika_publishes_with_confirms_and_consumes_from_rabbitmq() {
    require_root();
    let _g = serial();
    let mq = rabbitmq();
    let (recs, pid, stdout) = capture(PIKA, &[mq.port.to_string()]);
    recs.dump("pika_publishes_with_confirms_and_consumes_from_rabbitmq");
    assert_eq!(stdout.trim(), "msg-1 msg-2");
    let remote = format!("127.0.0.1:{}", mq.port);
    let c = client_side(&recs, pid, &remote, "amqp");
    server_side(&recs, &c, &remote, "amqp");
    assert_secret_not_parsed(&recs, "\u{0}guest\u{0}guest");

    // Connection: protocol header, start / start-ok (user, password withheld), tune, open.
    assert_eq!(fields(&c.sent[0])["kind"], "protocol_header");
    assert_eq!(bytes(&c.sent[0]), b"AMQP\x00\x00\x09\x01");
    let start = the(&c.received, "connection.start", |b| b["method"] == "connection.start");
    let sp = &fields(start)["args"]["server_properties"];
    assert_eq!(header(sp, "product").unwrap()["value"], "RabbitMQ", "{start}");
    let start_ok = answer_to(&c.sent, start);
    let a = &fields(start_ok)["args"];
    assert_eq!(
        (a["mechanism"].as_str(), a["user"].as_str(), a["password"].as_str()),
        (Some("PLAIN"), Some("guest"), Some("<withheld>"))
    );
    assert_eq!(a["response_len"], 12, "\\0guest\\0guest");
    assert_eq!(header(&a["client_properties"], "product").unwrap()["value"], "Pika Python Client Library");
    let tune = the(&c.received, "connection.tune", |b| b["method"] == "connection.tune");
    answer_to(&c.sent, tune);
    let open = the(&c.sent, "connection.open", |b| b["method"] == "connection.open");
    assert_eq!(fields(open)["args"]["virtual_host"], "/");
    answer_to(&c.received, open);
    let ch = the(&c.sent, "channel.open", |b| b["method"] == "channel.open");
    assert_eq!(fields(ch)["channel"], 1);
    answer_to(&c.received, ch);
    answer_to(&c.received, the(&c.sent, "confirm.select", |b| b["method"] == "confirm.select"));
    let declare = the(&c.sent, "queue.declare", |b| b["method"] == "queue.declare");
    assert_eq!(fields(declare)["args"]["queue"], "wt.orders");
    let declared = answer_to(&c.received, declare);
    assert_eq!(fields(declared)["args"]["queue"], "wt.orders");

    // The publish: exchange, routing key, properties, body; confirmed by the broker.
    let body1: &[u8] = br#"{"clordid":"ORD-1","qty":100}"#;
    let pubs = amqp_methods(&c.sent, "basic.publish");
    assert_eq!(pubs.len(), 2);
    let p = fields(pubs[0]);
    assert_eq!((p["args"]["exchange"].as_str(), p["args"]["routing_key"].as_str()), (Some(""), Some("wt.orders")));
    let props = &p["properties"];
    assert_eq!(
        (props["message_id"].as_str(), props["correlation_id"].as_str()),
        (Some("msg-1"), Some("corr-1")),
        "{p}"
    );
    assert_eq!((props["content_type"].as_str(), props["delivery_mode"].as_u64()), (Some("application/json"), Some(2)));
    assert_eq!(header(&props["headers"], "desk").unwrap()["value"], "rates");
    assert_eq!(header(&props["headers"], "attempt").unwrap()["value"], "2");
    assert_eq!((p["body_size"].as_u64(), p["body_complete"].as_bool()), (Some(body1.len() as u64), Some(true)));
    assert_eq!(p["body"]["text"].as_str().map(str::as_bytes), Some(body1));
    assert_eq!(payload_bytes(pubs[0], &p["body"]), body1, "body bytes at the recorded offset");
    assert_eq!((p["frames"].as_u64(), p["publish_seq"].as_u64()), (Some(3), Some(1)));
    let raw = bytes(pubs[0]);
    assert_eq!((raw[0], raw[raw.len() - 1]), (1, 0xce), "starts with a method frame, ends a frame");
    assert!(raw.ends_with(&[body1, &[0xce]].concat()));
    for (i, publish) in pubs.iter().enumerate() {
        let ack = answer_to(&c.received, publish);
        assert_eq!(fields(ack)["method"], "basic.ack");
        assert_eq!(fields(ack)["args"]["delivery_tag"].as_u64(), Some(i as u64 + 1), "{ack}");
    }

    // Deliveries: one-way, with the same properties and body; acked and nacked by the consumer.
    let delivers = amqp_methods(&c.received, "basic.deliver");
    assert_eq!(delivers.len(), 2, "{delivers:#?}");
    let d = fields(delivers[0]);
    assert_one_way(delivers[0]);
    assert_eq!((d["args"]["routing_key"].as_str(), d["args"]["delivery_tag"].as_u64()), (Some("wt.orders"), Some(1)));
    assert!(d["args"]["consumer_tag"].is_string());
    assert_eq!(d["properties"]["message_id"], "msg-1");
    assert_eq!(payload_bytes(delivers[0], &d["body"]), body1);
    let ack = the(&c.sent, "consumer ack", |b| b["method"] == "basic.ack");
    assert_eq!(fields(ack)["args"]["delivery_tag"], 1);
    assert_one_way(ack);
    let nack = the(&c.sent, "consumer nack", |b| b["method"] == "basic.nack");
    assert_eq!(fields(nack)["args"]["delivery_tag"].as_u64(), Some(2));
    // requeue=False, multiple=False: no flag set (flags are listed only when set).
    assert_eq!(fields(nack)["args"]["flags"], Value::Null, "{nack}");
    assert_one_way(nack);
    // The orderly end: connection.close answered by close-ok.
    let close = the(&c.sent, "connection.close", |b| b["method"] == "connection.close");
    assert_eq!(fields(close)["args"]["reply_code"], 200);
    answer_to(&c.received, close);
}

#[test]
fn nats_py_publishes_subscribes_and_pings() {
    require_root();
    let _g = serial();
    let srv = nats();
    let (recs, pid, stdout) = capture(NATS_PY, &[srv.port.to_string(), PASSWORD.to_string()]);
    recs.dump("nats_py_publishes_subscribes_and_pings");
    assert_eq!(stdout, "rates.eurusd {\"px\":\"1.0842\"}\nrates.gbpusd {\"px\":\"1.2650\"}\n");
    let remote = format!("127.0.0.1:{}", srv.port);
    let c = client_side(&recs, pid, &remote, "nats");
    server_side(&recs, &c, &remote, "nats");
    assert_secret_not_parsed(&recs, PASSWORD);

    let info = &c.received[0];
    assert_eq!(fields(info)["op"], "INFO");
    assert_eq!(fields(info)["info"]["auth_required"], true);
    assert!(fields(info)["info"]["version"].as_str().unwrap().starts_with("2."));
    let connect = &c.sent[0];
    let k = &fields(connect)["connect"];
    assert_eq!(
        (k["user"].as_str(), k["password"].as_str(), k["name"].as_str()),
        (Some("trader"), Some("<withheld>"), Some("wt-pricer")),
        "{connect}"
    );
    assert_eq!(k["lang"], "python3");
    let sub = the(&c.sent, "SUB", |b| b["op"] == "SUB");
    assert_eq!(
        (fields(sub)["subject"].as_str(), fields(sub)["queue_group"].as_str()),
        (Some("rates.*"), Some("pricers"))
    );
    let sid = fields(sub)["sid"].as_str().unwrap();
    assert_eq!(bytes(sub), format!("SUB rates.* pricers {sid}\r\n").into_bytes());
    assert_one_way(sub);
    // PUB with a reply subject, delivered back as MSG on the subscription.
    let publ = the(&c.sent, "PUB", |b| b["op"] == "PUB" && b["subject"] == "rates.eurusd");
    assert_eq!(fields(publ)["reply_to"], "rates.replies");
    assert_eq!(bytes(publ), b"PUB rates.eurusd rates.replies 15\r\n{\"px\":\"1.0842\"}\r\n");
    assert_eq!(fields(publ)["payload"]["text"], "{\"px\":\"1.0842\"}");
    assert_eq!(payload_bytes(publ, &fields(publ)["payload"]), b"{\"px\":\"1.0842\"}");
    let msg = the(&c.received, "MSG", |b| b["op"] == "MSG");
    let m = fields(msg);
    assert_eq!(
        (m["subject"].as_str(), m["sid"].as_str(), m["reply_to"].as_str()),
        (Some("rates.eurusd"), Some(sid), Some("rates.replies"))
    );
    assert_eq!(
        bytes(msg),
        format!("MSG rates.eurusd {sid} rates.replies 15\r\n{{\"px\":\"1.0842\"}}\r\n").into_bytes()
    );
    // HPUB with a header, delivered as HMSG.
    let hpub = the(&c.sent, "HPUB", |b| b["op"] == "HPUB");
    assert_eq!(fields(hpub)["headers"], serde_json::json!([["Desk", "fx"]]));
    assert_eq!(fields(hpub)["payload"]["text"], "{\"px\":\"1.2650\"}");
    let hmsg = the(&c.received, "HMSG", |b| b["op"] == "HMSG");
    assert_eq!(
        (fields(hmsg)["subject"].as_str(), fields(hmsg)["headers"].clone()),
        (Some("rates.gbpusd"), serde_json::json!([["Desk", "fx"]]))
    );
    assert_eq!(payload_bytes(hmsg, &fields(hmsg)["payload"]), b"{\"px\":\"1.2650\"}");
    for r in [publ, msg, hpub, hmsg] {
        assert_one_way(r);
    }
    // Every PING of the client is answered by a PONG.
    let pings = nats_ops(&c.sent, "PING");
    assert!(!pings.is_empty());
    for ping in pings {
        assert_eq!(bytes(ping), b"PING\r\n");
        let pong = answer_to(&c.received, ping);
        assert_eq!(bytes(pong), b"PONG\r\n");
    }
}

fn check_mqtt(recs: &Records, pid: u32, port: u16, v5: bool) {
    let remote = format!("127.0.0.1:{port}");
    let c = client_side(recs, pid, &remote, "mqtt");
    server_side(recs, &c, &remote, "mqtt");
    assert_secret_not_parsed(recs, PASSWORD);
    let connect = &c.sent[0];
    let k = fields(connect);
    let level = if v5 { 5 } else { 4 };
    assert_eq!(
        (k["packet_type"].as_str(), k["protocol_name"].as_str(), k["protocol_version"].as_u64()),
        (Some("CONNECT"), Some("MQTT"), Some(level))
    );
    let id = if v5 { "wt-pricer-v5" } else { "wt-pricer-v4" };
    assert_eq!(
        (k["client_id"].as_str(), k["user"].as_str(), k["password"].as_str()),
        (Some(id), Some("trader"), Some("<withheld>")),
        "{connect}"
    );
    assert_eq!((k["password_len"].as_u64(), k["keep_alive"].as_u64()), (Some(PASSWORD.len() as u64), Some(30)));
    let connack = answer_to(&c.received, connect);
    assert_eq!(fields(connack)["reason_code"], 0, "{connack}");
    let sub = the(&c.sent, "SUBSCRIBE", |b| b["packet_type"] == "SUBSCRIBE");
    assert_eq!(fields(sub)["subscriptions"][0]["filter"], "rates/eurusd");
    assert_eq!(fields(sub)["subscriptions"][0]["qos"], 1);
    let suback = answer_to(&c.received, sub);
    assert_eq!(fields(suback)["reason_codes"], serde_json::json!([1]));
    // QoS 1 publish, acknowledged by packet id; the broker's delivery acknowledged by the client.
    let pubs = mqtt_packets(&c.sent, "PUBLISH");
    assert_eq!(pubs.len(), 2, "{pubs:#?}");
    let p1 = fields(pubs[0]);
    assert_eq!(
        (p1["topic"].as_str(), p1["qos"].as_u64(), p1["retain"].as_bool()),
        (Some("rates/eurusd"), Some(1), Some(false))
    );
    assert_eq!(p1["payload"]["text"], "{\"px\":\"1.0842\"}");
    assert_eq!(payload_bytes(pubs[0], &p1["payload"]), b"{\"px\":\"1.0842\"}");
    if v5 {
        let props = &p1["properties"];
        assert!(props.as_array().unwrap().iter().any(|p| p[0] == "content_type" && p[1] == "application/json"), "{p1}");
        assert!(props.as_array().unwrap().iter().any(|p| p[0] == "user_property" && p[1] == "desk=rates"), "{p1}");
    } else {
        let mut expect = vec![0x32, 0, 0, 12];
        expect.extend_from_slice(b"rates/eurusd");
        expect.extend_from_slice(&(p1["packet_id"].as_u64().unwrap() as u16).to_be_bytes());
        expect.extend_from_slice(b"{\"px\":\"1.0842\"}");
        expect[1] = (expect.len() - 2) as u8;
        expect[2] = 0;
        assert_eq!(bytes(pubs[0]), expect);
    }
    let puback = answer_to(&c.received, pubs[0]);
    assert_eq!(
        (fields(puback)["packet_type"].as_str(), fields(puback)["packet_id"].clone()),
        (Some("PUBACK"), p1["packet_id"].clone())
    );
    let delivered = the(&c.received, "delivery", |b| b["packet_type"] == "PUBLISH");
    assert_eq!(
        (fields(delivered)["topic"].as_str(), fields(delivered)["qos"].as_u64()),
        (Some("rates/eurusd"), Some(1))
    );
    let back = answer_to(&c.sent, delivered);
    assert_eq!(fields(back)["packet_type"], "PUBACK");
    // QoS 2: PUBLISH → PUBREC, PUBREL → PUBCOMP.
    let p2 = pubs[1];
    assert_eq!((fields(p2)["topic"].as_str(), fields(p2)["qos"].as_u64()), (Some("rates/gbpusd"), Some(2)));
    assert_eq!(fields(answer_to(&c.received, p2))["packet_type"], "PUBREC");
    let rel = the(&c.sent, "PUBREL", |b| b["packet_type"] == "PUBREL");
    assert_eq!(fields(answer_to(&c.received, rel))["packet_type"], "PUBCOMP");
    let disconnect = c.sent.last().unwrap();
    assert_eq!(fields(disconnect)["packet_type"], "DISCONNECT");
    assert_one_way(disconnect);
}

#[test]
fn paho_mqtt_311_and_5_with_mosquitto() {
    require_root();
    let _g = serial();
    let srv = mosquitto();
    for v in ["4", "5"] {
        let (recs, pid, stdout) = capture(PAHO, &[srv.port.to_string(), PASSWORD.to_string(), v.to_string()]);
        recs.dump(&format!("paho_mqtt_v{v}_with_mosquitto"));
        assert_eq!(stdout, "rates/eurusd {\"px\":\"1.0842\"}\n");
        check_mqtt(&recs, pid, srv.port, v == "5");
    }
}
