//! The route parser, the config parser, usage extraction and pasted-key extraction never
//! panic on hostile input and read what they are given the way the rest of the daemon
//! expects: a route for a known path, an error naming an unknown config key, the last usage
//! block as a JSON parser reads it, every pasted key between any separators.

use super::cases;
use crate::config::Config;
use crate::keys::format::extract_keys;
use crate::router::{Route, RouteError};
use crate::usage;
use http::Method;
use proptest::prelude::*;
use serde_json::{Value, json};

// ------------------------------------------------------------------ routes

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::HEAD),
        Just(Method::PUT),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
    ]
}

/// Paths made of the router's own words, odd characters and empty segments.
fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("v1beta".to_string()),
        Just("v1".to_string()),
        Just("openai".to_string()),
        Just("models".to_string()),
        Just("api".to_string()),
        Just("keys".to_string()),
        Just("users".to_string()),
        Just("logs".to_string()),
        Just("chat".to_string()),
        Just("completions".to_string()),
        Just("gemini-2.5-flash:generateContent".to_string()),
        Just(":streamGenerateContent".to_string()),
        Just(":".to_string()),
        Just("".to_string()),
        Just("..".to_string()),
        "\\PC{0,12}",
    ];
    prop::collection::vec(seg, 0..7).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn route_parse_never_panics_and_is_consistent(m in method(), p in path()) {
        let once = Route::parse(&m, &p);
        prop_assert_eq!(&once, &Route::parse(&m, &p), "not deterministic");
        if let Ok(Route::Gemini { model: Some(model), .. }) = &once {
            prop_assert!(!model.is_empty(), "empty model from {}", p);
            prop_assert!(p.contains(model), "model {} not in {}", model, p);
            prop_assert!(!model.contains('/'), "model {} spans segments", model);
        }
        // HEAD is accepted exactly where GET is.
        if m == Method::HEAD {
            let get = Route::parse(&Method::GET, &p);
            prop_assert_eq!(once.is_ok(), get.is_ok(), "HEAD vs GET on {}", p);
        }
        // A path a method does not serve is 405 only when some method serves it.
        if once == Err(RouteError::MethodNotAllowed) {
            let any = [Method::GET, Method::POST, Method::PATCH, Method::DELETE]
                .iter()
                .any(|m| Route::parse(m, &p).is_ok());
            prop_assert!(any, "405 for {} but no method is allowed", p);
        }
    }

    #[test]
    fn route_parse_survives_arbitrary_text(m in method(), p in "\\PC{0,200}") {
        let _ = Route::parse(&m, &p);
    }
}

// ------------------------------------------------------------------ config

/// TOML-ish text built from the config's own keys and sections with random values.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("listen"),
        Just("data_dir"),
        Just("log_level"),
        Just("store"),
        Just("password"),
        Just("base_url"),
        Just("request_timeout"),
        Just("max_attempts"),
        Just("queue_wait"),
        Just("max_body_bytes"),
        Just("enabled"),
        Just("key"),
        Just("name"),
        Just("nonsense_key"),
    ];
    let value = prop_oneof![
        Just("\"30s\"".to_string()),
        Just("\"-1s\"".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        "\"\\PC{0,16}\"",
        "\\PC{0,12}",
    ];
    let section = prop_oneof![
        Just(""),
        Just("[admin]"),
        Just("[upstream]"),
        Just("[pool]"),
        Just("[server]"),
        Just("[logs]"),
        Just("[[upstream_keys]]"),
        Just("[[users]]"),
        Just("[bogus]"),
    ];
    let line = prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        section.prop_map(str::to_string),
        "\\PC{0,30}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn config_parse_never_panics(text in config_text()) {
        if let Ok(c) = Config::parse(&text) {
            let _ = c.validate();
        }
    }

    #[test]
    fn config_parse_survives_arbitrary_unicode(text in "\\PC{0,200}") {
        let _ = Config::parse(&text);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it(name in "[a-z]{3,12}_zz", section in prop::sample::select(vec!["", "[pool]", "[server]", "[upstream]"])) {
        let text = format!("{section}\n{name} = 1\n");
        let err = Config::parse(&text).expect_err("unknown key accepted");
        prop_assert!(err.to_string().contains(&name), "{} does not name {}", err, name);
    }
}

// ------------------------------------------------------------------ usage, pasted keys

/// A usage member's name: one the parser reads (either API's), or another.
fn usage_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "promptTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
            "cachedContentTokenCount",
            "totalTokenCount",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "completion_tokens_details",
            "prompt_tokens_details",
            "reasoning_tokens",
            "cached_tokens",
        ])
        .prop_map(String::from),
        "x_[a-zA-Z_]{0,10}",
    ]
}

/// Any JSON value a usage member might hold: counts of every shape, nested details.
fn usage_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Value::from),
        (0u64..1000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((usage_name(), inner), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a JSON parser makes of a usage object: whole numbers that fit count, anything
/// else is 0; OpenAI's details are objects with their own count.
fn usage_by_json(gemini: bool, usage: &Value) -> usage::Tokens {
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let inner = |name: &str, field: &str| count(usage.get(name).and_then(|d| d.get(field)));
    if gemini {
        usage::Tokens {
            prompt: count(usage.get("promptTokenCount")),
            candidates: count(usage.get("candidatesTokenCount")),
            thoughts: count(usage.get("thoughtsTokenCount")),
            cached: count(usage.get("cachedContentTokenCount")),
            total: count(usage.get("totalTokenCount")),
        }
    } else {
        usage::Tokens {
            prompt: count(usage.get("prompt_tokens")),
            candidates: count(usage.get("completion_tokens")),
            thoughts: inner("completion_tokens_details", "reasoning_tokens"),
            cached: inner("prompt_tokens_details", "cached_tokens"),
            total: count(usage.get("total_tokens")),
        }
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn usage_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = usage::parse(&bytes);
    }

    #[test]
    fn usage_parse_reads_the_last_usage_block(
        a in 0u64..1 << 40, b in 0u64..1 << 40, prefix in "\\PC{0,40}",
    ) {
        let first = json!({"usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 1}});
        let last = json!({"candidates": [{"content": {"parts": [{"text": prefix}]}}],
            "usageMetadata": {"promptTokenCount": a, "candidatesTokenCount": b,
                              "totalTokenCount": a + b}});
        let text = format!("data: {first}\r\n\r\ndata: {last}\r\n\r\n");
        let t = usage::parse(text.as_bytes()).expect("usage found");
        prop_assert_eq!((t.prompt, t.candidates, t.total), (a, b, a + b));
    }

    #[test]
    fn usage_parse_reads_what_a_json_parser_reads(
        gemini in any::<bool>(),
        members in prop::collection::vec((usage_name(), usage_value()), 0..8),
        spaced in any::<bool>(),
    ) {
        let mut usage = serde_json::Map::new();
        for (name, value) in members {
            usage.insert(name, value);
        }
        let usage = Value::Object(usage);
        let key = if gemini { "usageMetadata" } else { "usage" };
        let text = if spaced {
            serde_json::to_string_pretty(&json!({"candidates": [], key: usage, "id": "x"}))
        } else {
            serde_json::to_string(&json!({"candidates": [], key: usage, "id": "x"}))
        }
        .unwrap();
        prop_assert_eq!(usage::parse(text.as_bytes()), Some(usage_by_json(gemini, &usage)));
    }

    #[test]
    fn extract_keys_finds_every_key_between_any_separators(
        keys in prop::collection::vec("AIza[A-Za-z0-9_-]{16,39}|[AI]Q\\.[A-Za-z0-9_-]{8,30}(\\.[A-Za-z0-9_-]{4,20})?", 0..20),
        seps in prop::collection::vec(prop::sample::select(vec![" ", "\n", "\r\n", ",", ";", "\t", "\"", "'", "[", "]", ", ", ". ", ".\n", "("]), 21),
    ) {
        let mut text = String::new();
        for (i, k) in keys.iter().enumerate() {
            text += seps[i];
            text += k;
        }
        text += seps[20];
        prop_assert_eq!(extract_keys(&text), keys);
    }

    #[test]
    fn extract_keys_never_panics_and_yields_clean_pieces(text in "\\PC{0,300}") {
        for k in extract_keys(&text) {
            prop_assert!(!k.is_empty());
            prop_assert!(text.contains(&k));
            prop_assert!(!k.chars().any(|c| c.is_whitespace() || ",;\"'[]".contains(c)));
        }
    }
}
