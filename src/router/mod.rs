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

mod admin;

pub use admin::AdminRoute;
use admin::admin_route;

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
mod tests;
