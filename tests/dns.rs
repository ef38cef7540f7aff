//! The upstream's host name is resolved by the daemon itself (hickory), against the name
//! servers it is given: a DNS server on loopback, started by the test, answers
//! `gemini.test` with 127.0.0.1 (A) and nothing for AAAA, and refuses every other name.

mod common;

use common::{Config, Daemon, USER_KEY, Upstream, client, model_path, ok_or_stream};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::{RData, Record, RecordType, rdata::A};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::UdpSocket;

const NAME: &str = "gemini.test.";

/// Serves DNS over UDP on 127.0.0.1:0; answers its address and a count of A queries for
/// [`NAME`].
async fn dns_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_recursion_available(true)
                .add_queries(query.queries().to_vec());
            for q in query.queries() {
                let name = q.name().to_ascii().to_ascii_lowercase();
                if name != NAME {
                    answer.set_response_code(ResponseCode::NXDomain);
                } else if q.query_type() == RecordType::A {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let a = RData::A(A(Ipv4Addr::LOCALHOST));
                    answer.add_answer(Record::from_rdata(q.name().clone(), 300, a));
                }
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    (addr, asked)
}

#[tokio::test]
async fn the_upstream_host_is_resolved_by_the_configured_name_server() {
    let up = Upstream::start(ok_or_stream).await;
    let (dns, asked) = dns_server().await;
    let port = up.url().rsplit(':').next().unwrap().to_owned();
    let cfg = Config::with_url(&format!("http://gemini.test:{port}"))
        .upstream(&format!("dns_servers = [\"{dns}\"]"));
    let d = Daemon::start(&cfg).await;
    let path = model_path(common::FLASH, "generateContent");
    let auth = [("x-goog-api-key", USER_KEY)];
    let r = client::post(&d.url(&path), &auth, common::GENERATE_BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        asked.load(Ordering::SeqCst) >= 1,
        "the daemon asked our server"
    );
    let host = up.requests()[0].headers["host"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(host, format!("gemini.test:{port}"));
}

#[tokio::test]
async fn a_name_the_server_does_not_know_is_a_clear_upstream_error() {
    let (dns, _) = dns_server().await;
    let cfg =
        Config::with_url("http://nowhere.test:9").upstream(&format!("dns_servers = [\"{dns}\"]"));
    let d = Daemon::start(&cfg).await;
    let path = model_path(common::FLASH, "generateContent");
    let r = client::post(
        &d.url(&path),
        &[("x-goog-api-key", USER_KEY)],
        common::GENERATE_BODY,
    )
    .await;
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    let v = r.json();
    assert!(
        v["error"]["message"].is_string(),
        "Google's error shape: {v}"
    );
    assert!(
        !r.text().contains(&common::key(0)),
        "no pool key in the error"
    );
}
