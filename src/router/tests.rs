use super::*;

fn post(p: &str) -> Result<Route<'_>, RouteError> {
    Route::parse(&Method::POST, p)
}

fn get(p: &str) -> Result<Route<'_>, RouteError> {
    Route::parse(&Method::GET, p)
}

#[test]
fn native_calls_under_both_versions() {
    for v in ["v1beta", "v1"] {
        let p = format!("/{v}/models/gemini-2.5-flash:streamGenerateContent");
        assert_eq!(
            post(&p),
            Ok(Route::Gemini {
                call: GeminiCall::Stream,
                model: Some("gemini-2.5-flash")
            })
        );
    }
    assert_eq!(
        post("/v1beta/models/text-embedding-004:batchEmbedContents"),
        Ok(Route::Gemini {
            call: GeminiCall::BatchEmbed,
            model: Some("text-embedding-004")
        })
    );
    assert_eq!(
        get("/v1beta/models/gemini-2.5-pro"),
        Ok(Route::Gemini {
            call: GeminiCall::GetModel,
            model: Some("gemini-2.5-pro")
        })
    );
}

#[test]
fn openai_paths_and_their_google_alias() {
    assert_eq!(
        post("/v1/chat/completions"),
        Ok(Route::OpenAi(OpenAiCall::Chat))
    );
    assert_eq!(
        post("/v1beta/openai/chat/completions"),
        Ok(Route::OpenAi(OpenAiCall::Chat))
    );
    assert_eq!(
        get("/v1beta/openai/models"),
        Ok(Route::OpenAi(OpenAiCall::Models))
    );
    // `/v1/models` is shared: the proxy picks the shape from the caller's auth style.
    assert!(matches!(get("/v1/models"), Ok(Route::Gemini { .. })));
}

#[test]
fn wrong_method_is_405_and_unknown_api_path_is_404() {
    assert_eq!(
        get("/v1beta/models/x:generateContent"),
        Err(RouteError::MethodNotAllowed)
    );
    assert_eq!(post("/healthz"), Err(RouteError::MethodNotAllowed));
    assert_eq!(
        post("/v1beta/models/:generateContent"),
        Err(RouteError::NotFound)
    );
    assert_eq!(get("/v2/models"), Ok(Route::Ui("/v2/models")));
    assert_eq!(post("/upload/v2/files"), Err(RouteError::NotFound));
    assert_eq!(get("/api/nope"), Err(RouteError::NotFound));
    assert_eq!(get("/api"), Err(RouteError::NotFound));
}

#[test]
fn other_native_methods_go_to_the_native_table() {
    let native = |r: Result<Route<'_>, RouteError>| match r {
        Ok(Route::Gemini {
            call: GeminiCall::Native(n),
            ..
        }) => n.label,
        other => panic!("not native: {other:?}"),
    };
    assert_eq!(native(post("/v1beta/models/x:explode")), "other");
    assert_eq!(native(get("/v1beta/other")), "other");
    assert_eq!(native(get("/v1/files")), "files.list");
    assert_eq!(native(get("/v1alpha/files/abc")), "files.get");
    assert_eq!(native(post("/upload/v1beta/files")), "files.upload");
    assert_eq!(
        native(post("/v1beta/models/veo-3.0:predictLongRunning")),
        "models.predictLongRunning"
    );
    assert_eq!(
        native(Route::parse(&Method::DELETE, "/v1beta/cachedContents/c1")),
        "cachedContents.delete"
    );
    assert_eq!(native(post("/v1beta/interactions")), "interactions.create");
    // Generation routes and their method checks are unchanged.
    assert_eq!(
        get("/v1beta/models/x:generateContent"),
        Err(RouteError::MethodNotAllowed)
    );
    assert!(matches!(
        post("/v1/chat/completions"),
        Ok(Route::OpenAi(OpenAiCall::Chat))
    ));
}

#[test]
fn admin_routes_by_method() {
    let r = |m: Method, p| Route::parse(&m, p);
    assert_eq!(
        r(Method::POST, "/api/login"),
        Ok(Route::Admin(AdminRoute::Login))
    );
    assert_eq!(
        r(Method::GET, "/api/keys"),
        Ok(Route::Admin(AdminRoute::ListKeys))
    );
    assert_eq!(
        r(Method::GET, "/api/keys/export"),
        Ok(Route::Admin(AdminRoute::ExportKeys))
    );
    assert_eq!(
        r(Method::PATCH, "/api/keys/ab12"),
        Ok(Route::Admin(AdminRoute::PatchKey("ab12")))
    );
    assert_eq!(
        r(Method::POST, "/api/users/u1/rotate"),
        Ok(Route::Admin(AdminRoute::RotateUser("u1")))
    );
    assert_eq!(
        r(Method::GET, "/api/login"),
        Err(RouteError::MethodNotAllowed)
    );
    assert_eq!(
        r(Method::PUT, "/api/keys/ab12"),
        Err(RouteError::MethodNotAllowed)
    );
    assert_eq!(r(Method::GET, "/api/secrets"), Err(RouteError::NotFound));
}

#[test]
fn doubled_slashes_are_one() {
    let clean = |s: &str| cleaned(&s.parse().unwrap()).map(|u| u.to_string());
    assert_eq!(
        clean("//v1beta/models/m:generateContent?alt=sse").as_deref(),
        Some("/v1beta/models/m:generateContent?alt=sse")
    );
    assert_eq!(
        clean("/v1beta//files///f/").as_deref(),
        Some("/v1beta/files/f/")
    );
    assert_eq!(clean("//").as_deref(), Some("/"));
    assert_eq!(clean("/v1beta/models"), None);
}

#[test]
fn live_methods_under_ws() {
    let live = |p: &str| {
        get(p).map(|r| match r {
            Route::Live(c) => (c.version, c.constrained),
            other => panic!("not live: {other:?}"),
        })
    };
    let p = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
    assert_eq!(live(p), Ok(("v1beta", false)));
    let p =
        "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained";
    assert_eq!(live(p), Ok(("v1alpha", true)));
    // google-genai's default API version is `v1`.
    let p = "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent";
    assert_eq!(live(p), Ok(("v1", false)));
    let p = "/ws/google.ai.generativelanguage.v2.GenerativeService.BidiGenerateContent";
    assert_eq!(get(p), Err(RouteError::NotFound));
    assert_eq!(get("/ws/other"), Err(RouteError::NotFound));
    assert_eq!(get("/ws/a/b"), Err(RouteError::NotFound));
    let p = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
    assert_eq!(post(p), Err(RouteError::MethodNotAllowed));
}

#[test]
fn each_family_answers_in_its_shape() {
    for p in [
        "/v1beta/openai/nope",
        "/v1/chat/completions/x",
        "/v1/embeddings",
        "/v1/images/edits",
    ] {
        assert_eq!(shape_of(p), Shape::OpenAi, "{p}");
    }
    assert_eq!(shape_of("/api/nope"), Shape::Admin);
    for p in ["/v1beta/models/x:nope", "/upload/v2/files", "/", "/healthz"] {
        assert_eq!(shape_of(p), Shape::Google, "{p}");
    }
    let shape = |m: Method, p| Route::parse(&m, p).unwrap().shape();
    assert_eq!(shape(Method::POST, "/v1/chat/completions"), Shape::OpenAi);
    assert_eq!(shape(Method::GET, "/v1beta/openai/models"), Shape::OpenAi);
    assert_eq!(shape(Method::GET, "/api/keys"), Shape::Admin);
    assert_eq!(shape(Method::GET, "/v1/files"), Shape::Google);
    assert_eq!(shape(Method::GET, "/healthz"), Shape::Google);
}

#[test]
fn each_route_names_its_credential() {
    let auth = |m: Method, p| Route::parse(&m, p).unwrap().auth();
    assert_eq!(auth(Method::GET, "/healthz"), Auth::Open);
    assert_eq!(auth(Method::GET, "/"), Auth::Open);
    assert_eq!(auth(Method::POST, "/api/login"), Auth::Open);
    assert_eq!(auth(Method::POST, "/api/logout"), Auth::AdminSession);
    assert_eq!(auth(Method::GET, "/api/keys"), Auth::AdminSession);
    assert_eq!(auth(Method::GET, "/metrics"), Auth::MetricsToken);
    assert_eq!(auth(Method::POST, "/v1/embeddings"), Auth::UserKey);
    assert_eq!(auth(Method::GET, "/v1beta/files"), Auth::UserKey);
}

#[test]
fn only_v1_models_is_shared_with_openai() {
    assert!(shared_models("/v1/models"));
    assert!(shared_models("/v1/models/gemini-2.5-flash"));
    assert!(!shared_models("/v1beta/models"));
    assert!(!shared_models("/v1/models/x/operations"));
}

#[test]
fn everything_else_is_the_ui() {
    assert_eq!(get("/"), Ok(Route::Ui("/")));
    assert_eq!(get("/app.js"), Ok(Route::Ui("/app.js")));
    assert_eq!(post("/"), Err(RouteError::MethodNotAllowed));
}
