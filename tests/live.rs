//! The Live API through the gateway, as google-genai's `client.aio.live.connect` uses
//! it: a WebSocket at Google's path with the user key, `setup` first, then turns. The
//! upstream is the fake of `common::live`, which speaks Live as Google does.

mod common;

use common::admin::{admin_ok, login};
use common::live::FakeLive;
use common::live_client::{
    self as lc, CONSTRAINED_PATH, LIVE_PATH, MODEL, fake_brief, live_records, text_turn,
};
use common::{Config, Daemon, USER_KEY, key, wait_for};
use futures_util::{SinkExt, StreamExt};
use http::Method;
use serde_json::json;
use std::time::Duration;

const PASSWORD: &str = "live-admin-pw-7";

fn config(fake: &FakeLive, keys: usize) -> Config {
    Config::with_url(&fake.url())
        .keys(common::keys(keys))
        .admin_password(PASSWORD)
}

#[tokio::test]
async fn a_session_gets_its_answers_and_is_logged_once_with_its_tokens() {
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 1)).await;
    let path = format!("{LIVE_PATH}?key={USER_KEY}");
    let mut ws = lc::connect(d.addr, &path, &[]).await.unwrap();
    ws.send(lc::setup(MODEL)).await.unwrap();
    let (_, first) = lc::next_json(&mut ws).await.unwrap();
    assert!(first.get("setupComplete").is_some(), "{first}");
    let (said, usage) = text_turn(&mut ws, "hello").await;
    assert_eq!(said, "echo: hello");
    assert_eq!(usage["totalTokenCount"], 15);
    let (said, _) = text_turn(&mut ws, "again").await;
    assert_eq!(said, "echo: again");
    // Audio comes back in many binary frames, each as Google sent it.
    let pcm = "QUJD".repeat(1024);
    ws.send(lc::audio(&pcm)).await.unwrap();
    let mut back = String::new();
    while back.len() < pcm.len() {
        let (binary, m) = lc::next_json(&mut ws).await.unwrap();
        assert!(binary);
        back.push_str(
            m.pointer("/serverContent/modelTurn/parts/0/inlineData/data")
                .unwrap()
                .as_str()
                .unwrap(),
        );
    }
    assert_eq!(back, pcm);
    // goAway is passed on.
    ws.send(lc::turn("goaway")).await.unwrap();
    let (_, m) = lc::next_json(&mut ws).await.unwrap();
    assert_eq!(m["goAway"]["timeLeft"], "5s");
    ws.close(None).await.unwrap();
    assert_eq!(
        lc::closed(&mut ws).await,
        None,
        "a close without a code is answered in kind"
    );

    let sessions = fake.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].key.as_deref(), Some(key(0).as_str()));
    assert_eq!(sessions[0].query, None, "the user key is not sent upstream");
    assert_eq!(
        sessions[0].setup.as_ref().unwrap()["setup"]["model"],
        format!("models/{MODEL}")
    );

    let token = login(&d, PASSWORD).await;
    let rec = wait_for("the session's record", Duration::from_secs(10), || async {
        match live_records(&d, &token).await.as_slice() {
            [r] => Ok(r.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(rec["route"], "live.bidiGenerateContent");
    assert_eq!(rec["model"], MODEL);
    assert_eq!(rec["user"], common::USER_NAME);
    assert_eq!(rec["status"], 101);
    assert_eq!(rec["outcome"], "ok");
    assert_eq!(rec["tokens"]["total"], 30, "two turns of 15: {rec}");
    assert_eq!(rec["tokens"]["candidates"], 10);
    assert_eq!(rec["key"], fake_brief(&key(0)), "{rec}");
    assert_eq!(
        rec["close_code"], 1005,
        "the client closed without a code: {rec}"
    );
    assert!(
        rec["bytes_up"].as_u64().unwrap() > pcm.len() as u64,
        "{rec}"
    );
    assert!(
        rec["bytes_down"].as_u64().unwrap() > pcm.len() as u64,
        "{rec}"
    );
}

#[tokio::test]
async fn a_bad_key_at_setup_fails_over_before_the_client_sees_anything() {
    let fake = FakeLive::start().await;
    fake.invalid(&key(0));
    fake.cooling(&key(1));
    fake.refuse_upgrade(&key(2));
    let d = Daemon::start(&config(&fake, 4).pool("max_attempts", "4")).await;
    // Sessions until every key was tried (the pool's order is its own): each one opens
    // on the good key, whatever was tried before it.
    let mut opened = 0;
    while fake
        .sessions()
        .iter()
        .filter_map(|s| s.key.clone())
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 4
    {
        assert!(opened < 4, "the good key is found within four sessions");
        let mut ws = lc::connect(d.addr, LIVE_PATH, &[("x-goog-api-key", USER_KEY)])
            .await
            .unwrap();
        ws.send(lc::setup(MODEL)).await.unwrap();
        let (_, first) = lc::next_json(&mut ws).await.unwrap();
        assert!(first.get("setupComplete").is_some(), "{first}");
        let (said, _) = text_turn(&mut ws, "hi").await;
        assert_eq!(said, "echo: hi");
        ws.close(None).await.unwrap();
        let _ = lc::closed(&mut ws).await;
        let last = fake.sessions().last().unwrap().clone();
        assert_eq!(last.key.as_deref(), Some(key(3).as_str()), "{last:?}");
        opened += 1;
    }
    let refused = fake.sessions().iter().filter(|s| s.refused).count();
    assert_eq!(
        refused,
        3,
        "each bad key was tried once: {:?}",
        fake.sessions()
    );

    // The invalid keys are retired, the cooling one cooled for the model.
    let token = login(&d, PASSWORD).await;
    let keys = admin_ok(&d, Method::GET, "/api/keys", &token, None).await;
    let state = |k: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["brief"] == fake_brief(k))
            .map(|e| e["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state(&key(0)).as_deref(), Some("invalid"), "{keys}");
    assert_eq!(state(&key(2)).as_deref(), Some("invalid"), "{keys}");
    assert_eq!(state(&key(3)).as_deref(), Some("active"), "{keys}");
    let chains = wait_for("the sessions' records", Duration::from_secs(10), || async {
        let recs = live_records(&d, &token).await;
        if recs.len() == opened {
            Ok(recs)
        } else {
            Err(format!("{recs:?}"))
        }
    })
    .await;
    let outcomes: Vec<String> = chains
        .iter()
        .flat_map(|r| r["attempt_chain"].as_array().unwrap().clone())
        .map(|a| a["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(common::count(&outcomes, "invalid"), 2, "{outcomes:?}");
    assert_eq!(common::count(&outcomes, "rate_limited"), 1, "{outcomes:?}");
    assert!(chains.iter().all(|r| r["outcome"] == "ok"), "{chains:?}");
}

#[tokio::test]
async fn a_session_google_refuses_for_the_request_is_closed_with_googles_reason() {
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 2)).await;
    let mut ws = lc::connect(d.addr, LIVE_PATH, &[("x-goog-api-key", USER_KEY)])
        .await
        .unwrap();
    // The first message must be `setup`.
    ws.send(lc::turn("hi")).await.unwrap();
    let close = lc::closed(&mut ws).await.expect("a close frame");
    assert_eq!(close.0, 1007, "{close:?}");
    assert!(fake.sessions().is_empty(), "nothing reached Google");
    let token = login(&d, PASSWORD).await;
    let rec = wait_for("the refusal's record", Duration::from_secs(10), || async {
        match live_records(&d, &token).await.as_slice() {
            [r] => Ok(r.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(rec["close_code"], 1007, "{rec}");
    assert_eq!(rec["outcome"], "client_error", "{rec}");
    assert_eq!(rec["attempts"], 0, "{rec}");
    // An unknown user key never gets a WebSocket.
    let refused = lc::connect(d.addr, LIVE_PATH, &[("x-goog-api-key", "gb-nope")]).await;
    assert!(refused.is_err());
    // Constrained takes a token, not a user key.
    let refused = lc::connect(d.addr, CONSTRAINED_PATH, &[("x-goog-api-key", USER_KEY)]).await;
    assert!(refused.is_err());
    let _ = ws.next().await;
}

#[tokio::test]
async fn an_ephemeral_token_minted_through_the_gateway_opens_a_constrained_session_on_its_key() {
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 3)).await;
    // google-genai's `client.auth_tokens.create(config=…)` with the user key.
    let body = json!({
        "uses": 2,
        "expireTime": "2099-01-01T00:00:00Z",
        "bidiGenerateContentSetup": {"model": format!("models/{MODEL}")},
    });
    let minted = common::client::post(
        &d.url("/v1alpha/auth_tokens"),
        &[
            ("x-goog-api-key", USER_KEY),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(minted.status, 200, "{}", minted.text());
    let name = minted.json()["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("auth_tokens/"), "{name}");

    // Raw clients put it in `access_token=`; google-genai in `Authorization: Token`.
    let query = format!("{CONSTRAINED_PATH}?access_token={name}");
    let header = format!("Token {name}");
    for (path, headers) in [
        (query.as_str(), vec![]),
        (
            CONSTRAINED_PATH,
            vec![
                ("authorization", header.as_str()),
                ("x-goog-api-key", name.as_str()),
            ],
        ),
    ] {
        let mut ws = lc::connect(d.addr, path, &headers).await.unwrap();
        ws.send(lc::setup(MODEL)).await.unwrap();
        let (_, first) = lc::next_json(&mut ws).await.unwrap();
        assert!(first.get("setupComplete").is_some(), "{first}");
        let (said, _) = text_turn(&mut ws, "hi").await;
        assert_eq!(said, "echo: hi");
        ws.close(None).await.unwrap();
        let _ = lc::closed(&mut ws).await;
    }
    let sessions = fake.sessions();
    assert_eq!(sessions.len(), 2);
    let minted_with = fake.token_key(&name).expect("the fake minted it");
    for s in &sessions {
        assert!(s.path.ends_with("BidiGenerateContentConstrained"), "{s:?}");
        assert_eq!(
            s.token.as_deref(),
            Some(name.as_str()),
            "the token goes upstream: {s:?}"
        );
        assert_eq!(
            s.key.as_deref(),
            Some(minted_with.as_str()),
            "on the key that minted it"
        );
        assert_eq!(s.query, None, "no credential in the upstream URL: {s:?}");
    }

    // The table binds the token by its hash; the token itself is shown nowhere.
    let token = login(&d, PASSWORD).await;
    let resources = admin_ok(&d, Method::GET, "/api/resources", &token, None).await;
    assert!(!resources.to_string().contains(&name[12..]), "{resources}");
    let recs = wait_for(
        "both sessions' records",
        Duration::from_secs(10),
        || async {
            let recs = live_records(&d, &token).await;
            if recs.len() == 2 {
                Ok(recs)
            } else {
                Err(format!("{recs:?}"))
            }
        },
    )
    .await;
    for r in &recs {
        assert_eq!(r["route"], "live.bidiGenerateContentConstrained");
        assert_eq!(r["user"], common::USER_NAME);
        assert!(
            r["resource"].as_str().unwrap().starts_with("auth_tokens/"),
            "{r}"
        );
        assert!(!r.to_string().contains(&name[12..]), "{r}");
    }
    // A token nobody minted opens nothing.
    let forged = format!("{CONSTRAINED_PATH}?access_token=auth_tokens/forged");
    assert!(lc::connect(d.addr, &forged, &[]).await.is_err());
}

#[tokio::test]
async fn pings_are_answered_and_closes_are_relayed_both_ways() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 1)).await;
    let mut ws = lc::opened(&d).await;
    ws.send(Message::Ping(bytes::Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = loop {
        match tokio::time::timeout(common::client::TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => break p,
            Ok(Some(Ok(_))) => {}
            other => panic!("no pong: {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"are you there");
    // The client's close reaches Google with its code and reason.
    let bye = CloseFrame {
        code: 4000.into(),
        reason: "done here".into(),
    };
    ws.close(Some(bye)).await.unwrap();
    let echoed = lc::closed(&mut ws).await;
    assert_eq!(echoed, Some((4000, "done here".to_owned())));
    wait_for(
        "Google to hear the close",
        Duration::from_secs(5),
        || async {
            match fake.sessions().last().and_then(|s| s.closed_with.clone()) {
                Some(c) => Ok(c),
                None => Err("not yet".into()),
            }
        },
    )
    .await;
    assert_eq!(
        fake.sessions()[0].closed_with,
        Some((4000, "done here".to_owned()))
    );
    // Google's close reaches the client with its code and reason.
    let mut ws = lc::opened(&d).await;
    ws.send(lc::turn("close 1011 Internal error encountered."))
        .await
        .unwrap();
    let close = lc::closed(&mut ws).await;
    assert_eq!(
        close,
        Some((1011, "Internal error encountered.".to_owned()))
    );
    let token = login(&d, PASSWORD).await;
    let recs = wait_for("both records", Duration::from_secs(10), || async {
        let recs = live_records(&d, &token).await;
        if recs.len() == 2 {
            Ok(recs)
        } else {
            Err(format!("{recs:?}"))
        }
    })
    .await;
    let mut codes: Vec<(u64, String)> = recs
        .iter()
        .map(|r| {
            (
                r["close_code"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [(1011, "upstream_error".to_owned()), (4000, "ok".to_owned())]
    );
}

#[tokio::test]
async fn the_v1alpha_method_with_a_bearer_user_key() {
    let fake = FakeLive::start().await;
    let d = Daemon::start(&config(&fake, 1)).await;
    let path = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent";
    let bearer = format!("Bearer {USER_KEY}");
    let mut ws = lc::connect(d.addr, path, &[("authorization", bearer.as_str())])
        .await
        .unwrap();
    ws.send(lc::setup(MODEL)).await.unwrap();
    let (_, first) = lc::next_json(&mut ws).await.unwrap();
    assert!(first.get("setupComplete").is_some(), "{first}");
    let (said, _) = text_turn(&mut ws, "alpha").await;
    assert_eq!(said, "echo: alpha");
    let s = fake.sessions().remove(0);
    assert_eq!(s.path, path, "Google's path, unchanged");
    assert_eq!(s.key.as_deref(), Some(key(0).as_str()));
    assert_eq!(s.authorization, None, "the user key is not sent on: {s:?}");
}
