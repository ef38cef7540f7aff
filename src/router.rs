//! Maps a method and path to a [`Route`]. Pure: no I/O, no state. The endpoint table:
//!
//! | method | path                                                     | route            |
//! |--------|----------------------------------------------------------|------------------|
//! | GET    | `/healthz`                                               | Healthz          |
//! | POST   | `/{v1beta,v1}/models/{model}:generateContent`            | Gemini Generate  |
//! | POST   | `/{v1beta,v1}/models/{model}:streamGenerateContent`      | Gemini Stream    |
//! | POST   | `/{v1beta,v1}/models/{model}:countTokens`                | Gemini CountTokens |
//! | POST   | `/{v1beta,v1}/models/{model}:embedContent`               | Gemini Embed     |
//! | POST   | `/{v1beta,v1}/models/{model}:batchEmbedContents`         | Gemini BatchEmbed |
//! | GET    | `/{v1beta,v1}/models`                                    | Gemini ListModels (OpenAI list for Bearer callers on `/v1`) |
//! | GET    | `/{v1beta,v1}/models/{model}`                            | Gemini GetModel  |
//! | any    | every other path under `/{v1beta,v1,v1alpha}/` and `/upload/{version}/` | Gemini Native (the table in `native`) |
//! | POST   | `/v1/chat/completions`, `/v1beta/openai/chat/completions` | OpenAI Chat     |
//! | POST   | `/v1/embeddings`, `/v1beta/openai/embeddings`            | OpenAI Embeddings |
//! | POST   | `/v1/images/generations`, `/v1beta/openai/images/generations` | OpenAI Images |
//! | GET    | `/v1beta/openai/models`                                  | OpenAI Models    |
//! | POST   | `/api/login`, `/api/logout`                              | Admin Login/Logout |
//! | GET, POST | `/api/keys`                                           | Admin Keys list / bulk add |
//! | GET    | `/api/keys/export`                                       | Admin KeysExport |
//! | POST   | `/api/keys/check`, `/api/keys/reset`                     | Admin KeysCheck / KeysReset |
//! | PATCH, DELETE | `/api/keys/{id}`                                  | Admin Key        |
//! | POST   | `/api/keys/{id}/reset`                                   | Admin KeyReset   |
//! | GET, POST | `/api/users`                                          | Admin Users list / create |
//! | PATCH, DELETE | `/api/users/{id}`                                 | Admin User       |
//! | POST   | `/api/users/{id}/rotate`                                 | Admin UserRotate |
//! | GET    | `/api/logs`, `/api/logs/export`, `/api/logs/{id}`       | Admin logs       |
//! | GET    | `/api/stats/{summary,timeseries,heatmap}`                | Admin stats      |
//! | GET    | `/api/events`                                            | Admin live feed (SSE) |
//! | GET    | `/api/resources`                                         | Admin Resources  |
//! | GET    | `/api/live`                                              | Admin Live sessions open now |
//! | GET    | `/ws/google.ai.generativelanguage.{v1,v1beta,v1alpha}.GenerativeService.BidiGenerateContent[Constrained]` | Live (a WebSocket upgrade) |
//! | GET    | `/metrics`                                               | Metrics (Prometheus) |
//! | GET    | `/`, `/assets/…` and other non-API paths                 | Ui               |
//!
//! Unknown API paths are 404; a known path with the wrong method is 405. Each route says
//! the shape of its error answers ([`Route::shape`]; [`shape_of`] for a path without a
//! route) and the credential it needs ([`Route::auth`]).
//! Runs of `/` count as one (`//v1beta/models/…`, which Gemini CLI sends with a base
//! URL ending in `/`): [`clean_uri`] collapses them before routing, so the route and the
//! path sent upstream are the same as for the single slash.

use crate::error::Shape;
use crate::native::{self, NativeCall};
use http::{Method, Uri};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiCall {
    Generate,
    Stream,
    CountTokens,
    Embed,
    BatchEmbed,
    ListModels,
    GetModel,
    /// Files, caches, batches, operations, interactions and every method not above.
    Native(NativeCall),
}

impl GeminiCall {
    /// The route's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Generate => "generateContent",
            Self::Stream => "streamGenerateContent",
            Self::CountTokens => "countTokens",
            Self::Embed => "embedContent",
            Self::BatchEmbed => "batchEmbedContents",
            Self::ListModels => "models.list",
            Self::GetModel => "models.get",
            Self::Native(n) => n.label,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiCall {
    Chat,
    Embeddings,
    Images,
    Models,
}

impl OpenAiCall {
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat.completions",
            Self::Embeddings => "embeddings",
            Self::Images => "images.generations",
            Self::Models => "openai.models",
        }
    }
}

/// A Live API WebSocket: the API version of its path, and whether it is the
/// ephemeral-token (`…Constrained`) method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCall {
    pub version: &'static str,
    pub constrained: bool,
}

impl LiveCall {
    pub fn name(self) -> &'static str {
        if self.constrained {
            "live.bidiGenerateContentConstrained"
        } else {
            "live.bidiGenerateContent"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Healthz,
    Metrics,
    /// A native call; `model` is the path's model id (`gemini-2.5-flash`), if any.
    Gemini {
        call: GeminiCall,
        model: Option<&'a str>,
    },
    OpenAi(OpenAiCall),
    Live(LiveCall),
    Admin(AdminRoute<'a>),
    Ui(&'a str),
}

/// The admin API; every route but `Login` needs the admin session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute<'a> {
    Login,
    Logout,
    ListKeys,
    AddKeys,
    ExportKeys,
    CheckKeys,
    ResetKeys,
    PatchKey(&'a str),
    DeleteKey(&'a str),
    ResetKey(&'a str),
    ListUsers,
    CreateUser,
    PatchUser(&'a str),
    DeleteUser(&'a str),
    RotateUser(&'a str),
    Logs,
    ExportLogs,
    Log(&'a str),
    Summary,
    Timeseries,
    Heatmap,
    Events,
    /// The affinity table's rows: which key and user own each resource.
    Resources,
    /// The Live sessions open now.
    LiveSessions,
}

/// The credential a route needs; its handler checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Nothing: `/healthz`, the admin page's files, the admin login itself.
    Open,
    /// A user key (`x-goog-api-key`, `?key=` or `Authorization: Bearer`); an upload's
    /// byte requests carry their upload id instead.
    UserKey,
    /// The admin session cookie (and the CSRF header on changes).
    AdminSession,
    /// `server.metrics_token`, unless asked on the admin listener.
    MetricsToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed,
}

impl<'a> Route<'a> {
    pub fn parse(method: &Method, path: &'a str) -> Result<Self, RouteError> {
        let segs = segments(path);
        let (route, allowed) = match segs.as_slice() {
            ["healthz"] => (Route::Healthz, Method::GET),
            ["metrics"] => (Route::Metrics, Method::GET),
            [v, "models"] if is_version(v) => (
                Route::Gemini {
                    call: GeminiCall::ListModels,
                    model: None,
                },
                Method::GET,
            ),
            [v, "models", name] if is_version(v) && !is_native(method, name) => {
                gemini_model_route(name)?
            }
            ["v1beta", "openai", rest @ ..] => openai_route(rest).ok_or(RouteError::NotFound)?,
            ["v1", rest @ ..] if openai_route(rest).is_some() => {
                openai_route(rest).ok_or(RouteError::NotFound)?
            }
            ["api", rest @ ..] => return admin_route(method, rest).map(Route::Admin),
            ["ws", name] => (
                Route::Live(live_call(name).ok_or(RouteError::NotFound)?),
                Method::GET,
            ),
            ["ws", ..] => return Err(RouteError::NotFound),
            [v, rest @ ..] if is_version(v) || *v == "v1alpha" => {
                return Ok(native_route(native::parse(method, rest, false)));
            }
            ["upload", v, rest @ ..] if is_version(v) || *v == "v1alpha" => {
                return Ok(native_route(native::parse(method, rest, true)));
            }
            ["upload", ..] => return Err(RouteError::NotFound),
            _ => (Route::Ui(path), Method::GET),
        };
        let head_ok = allowed == Method::GET && method == Method::HEAD;
        if method != allowed && !head_ok {
            return Err(RouteError::MethodNotAllowed);
        }
        Ok(route)
    }

    /// The shape of the route's error answers: Google's on native routes, OpenAI's on the
    /// compatible ones, the admin API's under `/api/`.
    pub fn shape(&self) -> Shape {
        match self {
            Route::OpenAi(_) => Shape::OpenAi,
            Route::Admin(_) => Shape::Admin,
            Route::Gemini { .. }
            | Route::Live(_)
            | Route::Healthz
            | Route::Metrics
            | Route::Ui(_) => Shape::Google,
        }
    }

    pub fn auth(&self) -> Auth {
        match self {
            Route::Healthz | Route::Ui(_) => Auth::Open,
            Route::Metrics => Auth::MetricsToken,
            // A Live session's key (or ephemeral token) is checked before the upgrade.
            Route::Gemini { .. } | Route::OpenAi(_) | Route::Live(_) => Auth::UserKey,
            Route::Admin(route) => route.auth(),
        }
    }
}

impl AdminRoute<'_> {
    pub fn auth(&self) -> Auth {
        match self {
            AdminRoute::Login => Auth::Open,
            _ => Auth::AdminSession,
        }
    }
}

/// The error shape of the family a path belongs to, for answers given before it has a
/// route (none matches, the method is wrong, the request is malformed).
pub fn shape_of(path: &str) -> Shape {
    match segments(path).as_slice() {
        ["v1beta", "openai", ..] | ["v1", "chat" | "embeddings" | "images", ..] => Shape::OpenAi,
        ["api", ..] => Shape::Admin,
        _ => Shape::Google,
    }
}

/// `GET /v1/models[/{id}]`: the path Gemini's and OpenAI's model lists share.
pub fn shared_models(path: &str) -> bool {
    matches!(
        segments(path).as_slice(),
        ["v1", "models"] | ["v1", "models", _]
    )
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('/').split('/').collect()
}

/// Makes every run of `/` in the request target's path one. Copies nothing when there
/// is none (the usual case).
pub fn clean_uri(uri: &mut Uri) {
    if let Some(clean) = cleaned(uri) {
        *uri = clean;
    }
}

fn cleaned(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    if !path.contains("//") {
        return None;
    }
    let mut clean = String::with_capacity(path.len() + uri.query().map_or(0, |q| q.len() + 1));
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        clean.push('/');
        clean.push_str(seg);
    }
    if clean.is_empty() || path.ends_with('/') {
        clean.push('/');
    }
    if let Some(q) = uri.query() {
        clean.push('?');
        clean.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(clean.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// `google.ai.generativelanguage.{version}.GenerativeService.{method}`, Google's name of
/// the Live method.
fn live_call(name: &str) -> Option<LiveCall> {
    let rest = name.strip_prefix("google.ai.generativelanguage.")?;
    let (version, method) = rest.split_once(".GenerativeService.")?;
    let version = match version {
        "v1" => "v1",
        "v1beta" => "v1beta",
        "v1alpha" => "v1alpha",
        _ => return None,
    };
    let constrained = match method {
        "BidiGenerateContent" => false,
        "BidiGenerateContentConstrained" => true,
        _ => return None,
    };
    Some(LiveCall {
        version,
        constrained,
    })
}

fn is_version(v: &str) -> bool {
    v == "v1beta" || v == "v1"
}

/// `models/{m}:{method}` handled by the native table (not a generation route).
fn is_native(method: &Method, name: &str) -> bool {
    let native = native::parse(method, &["models", name], false);
    native.act != native::Act::Other
        || name
            .rsplit_once(':')
            .is_some_and(|(m, action)| !m.is_empty() && !is_generation(action))
}

fn is_generation(action: &str) -> bool {
    matches!(
        action,
        "generateContent"
            | "streamGenerateContent"
            | "countTokens"
            | "embedContent"
            | "batchEmbedContents"
    )
}

fn native_route<'a>(call: NativeCall) -> Route<'a> {
    Route::Gemini {
        call: GeminiCall::Native(call),
        model: None,
    }
}

fn gemini_model_route(name: &str) -> Result<(Route<'_>, Method), RouteError> {
    let Some((model, action)) = name.rsplit_once(':') else {
        if name.is_empty() {
            return Err(RouteError::NotFound);
        }
        let route = Route::Gemini {
            call: GeminiCall::GetModel,
            model: Some(name),
        };
        return Ok((route, Method::GET));
    };
    let call = match action {
        "generateContent" => GeminiCall::Generate,
        "streamGenerateContent" => GeminiCall::Stream,
        "countTokens" => GeminiCall::CountTokens,
        "embedContent" => GeminiCall::Embed,
        "batchEmbedContents" => GeminiCall::BatchEmbed,
        _ => return Err(RouteError::NotFound),
    };
    if model.is_empty() {
        return Err(RouteError::NotFound);
    }
    Ok((
        Route::Gemini {
            call,
            model: Some(model),
        },
        Method::POST,
    ))
}

fn admin_route<'a>(method: &Method, rest: &[&'a str]) -> Result<AdminRoute<'a>, RouteError> {
    use AdminRoute as A;
    if rest.iter().any(|s| s.is_empty()) {
        return Err(RouteError::NotFound);
    }
    // HEAD is GET without the body, as everywhere else.
    let m = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let route = match (rest, m) {
        (["login"], "POST") => A::Login,
        (["logout"], "POST") => A::Logout,
        (["keys"], "GET") => A::ListKeys,
        (["keys"], "POST") => A::AddKeys,
        (["keys", "export"], "GET") => A::ExportKeys,
        (["keys", "check"], "POST") => A::CheckKeys,
        (["keys", "reset"], "POST") => A::ResetKeys,
        (["keys", id], "PATCH") if !id.is_empty() => A::PatchKey(id),
        (["keys", id], "DELETE") if !id.is_empty() => A::DeleteKey(id),
        (["keys", id, "reset"], "POST") => A::ResetKey(id),
        (["users"], "GET") => A::ListUsers,
        (["users"], "POST") => A::CreateUser,
        (["users", id], "PATCH") if !id.is_empty() => A::PatchUser(id),
        (["users", id], "DELETE") if !id.is_empty() => A::DeleteUser(id),
        (["users", id, "rotate"], "POST") => A::RotateUser(id),
        (["logs"], "GET") => A::Logs,
        (["logs", "export"], "GET") => A::ExportLogs,
        (["logs", id], "GET") if !id.is_empty() => A::Log(id),
        (["stats", "summary"], "GET") => A::Summary,
        (["stats", "timeseries"], "GET") => A::Timeseries,
        (["stats", "heatmap"], "GET") => A::Heatmap,
        (["events"], "GET") => A::Events,
        (["resources"], "GET") => A::Resources,
        (["live"], "GET") => A::LiveSessions,
        (["login" | "logout" | "keys" | "users" | "logs" | "events" | "resources" | "live"], _)
        | (["keys" | "users" | "logs" | "stats", _], _)
        | (["keys", _, "reset"] | ["users", _, "rotate"], _) => {
            return Err(RouteError::MethodNotAllowed);
        }
        _ => return Err(RouteError::NotFound),
    };
    Ok(route)
}

fn openai_route<'a>(rest: &[&str]) -> Option<(Route<'a>, Method)> {
    let call = match rest {
        ["chat", "completions"] => OpenAiCall::Chat,
        ["embeddings"] => OpenAiCall::Embeddings,
        ["images", "generations"] => OpenAiCall::Images,
        ["models"] => return Some((Route::OpenAi(OpenAiCall::Models), Method::GET)),
        _ => return None,
    };
    Some((Route::OpenAi(call), Method::POST))
}

#[cfg(test)]
mod tests {
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
        let p = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained";
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
}
