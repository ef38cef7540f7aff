//! The admin API's routes (`/api/…`) and the credential each needs.

use super::{Auth, RouteError};
use http::Method;

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

impl AdminRoute<'_> {
    pub fn auth(&self) -> Auth {
        match self {
            AdminRoute::Login => Auth::Open,
            _ => Auth::AdminSession,
        }
    }
}

pub(super) fn admin_route<'a>(
    method: &Method,
    rest: &[&'a str],
) -> Result<AdminRoute<'a>, RouteError> {
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
