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
//! | POST   | `/v1/chat/completions`, `/v1beta/openai/chat/completions` | OpenAI Chat     |
//! | POST   | `/v1/embeddings`, `/v1beta/openai/embeddings`            | OpenAI Embeddings |
//! | POST   | `/v1/images/generations`, `/v1beta/openai/images/generations` | OpenAI Images |
//! | GET    | `/v1beta/openai/models`                                  | OpenAI Models    |
//! | GET    | `/`, `/assets/…` and other non-API paths                 | Ui               |
//!
//! Unknown API paths are 404; a known path with the wrong method is 405.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiCall {
    Generate,
    Stream,
    CountTokens,
    Embed,
    BatchEmbed,
    ListModels,
    GetModel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiCall {
    Chat,
    Embeddings,
    Images,
    Models,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Healthz,
    /// A native call; `model` is the path's model id (`gemini-2.5-flash`), if any.
    Gemini {
        call: GeminiCall,
        model: Option<&'a str>,
    },
    OpenAi(OpenAiCall),
    Ui(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed,
}

impl<'a> Route<'a> {
    pub fn parse(method: &Method, path: &'a str) -> Result<Self, RouteError> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (route, allowed) = match segs.as_slice() {
            ["healthz"] => (Route::Healthz, Method::GET),
            [v, "models"] if is_version(v) => (
                Route::Gemini {
                    call: GeminiCall::ListModels,
                    model: None,
                },
                Method::GET,
            ),
            [v, "models", name] if is_version(v) => gemini_model_route(name)?,
            ["v1", rest @ ..] | ["v1beta", "openai", rest @ ..] => openai_route(rest)?,
            ["v1beta", ..] | ["api", ..] => return Err(RouteError::NotFound),
            _ => (Route::Ui(path), Method::GET),
        };
        let head_ok = allowed == Method::GET && method == Method::HEAD;
        if method != allowed && !head_ok {
            return Err(RouteError::MethodNotAllowed);
        }
        Ok(route)
    }
}

fn is_version(v: &str) -> bool {
    v == "v1beta" || v == "v1"
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

fn openai_route<'a>(rest: &[&str]) -> Result<(Route<'a>, Method), RouteError> {
    let call = match rest {
        ["chat", "completions"] => OpenAiCall::Chat,
        ["embeddings"] => OpenAiCall::Embeddings,
        ["images", "generations"] => OpenAiCall::Images,
        ["models"] => return Ok((Route::OpenAi(OpenAiCall::Models), Method::GET)),
        _ => return Err(RouteError::NotFound),
    };
    Ok((Route::OpenAi(call), Method::POST))
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
        assert_eq!(post("/v1beta/models/x:explode"), Err(RouteError::NotFound));
        assert_eq!(
            post("/v1beta/models/:generateContent"),
            Err(RouteError::NotFound)
        );
        assert_eq!(get("/v1beta/other"), Err(RouteError::NotFound));
        assert_eq!(get("/api/nope"), Err(RouteError::NotFound));
    }

    #[test]
    fn everything_else_is_the_ui() {
        assert_eq!(get("/"), Ok(Route::Ui("/")));
        assert_eq!(get("/app.js"), Ok(Route::Ui("/app.js")));
        assert_eq!(post("/"), Err(RouteError::MethodNotAllowed));
    }
}
