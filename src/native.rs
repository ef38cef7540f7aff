//! The table of native Gemini methods beyond generation, and what each one does to the
//! resources Google keeps per project. Pure: segments in, a [`NativeCall`] out.
//!
//! | path (after `/{v1beta,v1,v1alpha}/`)                 | method        | act            |
//! |------------------------------------------------------|---------------|----------------|
//! | `files`                                              | GET           | List(Files)    |
//! | `files/{id}`, `files/{id}:download`                  | GET, DELETE   | Owned          |
//! | `cachedContents`                                     | POST / GET    | Create / List  |
//! | `cachedContents/{id}`                                | GET PATCH DELETE | Owned       |
//! | `models/{m}:batchGenerateContent`, `:asyncBatchEmbedContent` | POST  | Create(Batches) |
//! | `batches`                                            | GET           | List(Batches)  |
//! | `batches/{id}`, `batches/{id}:cancel`                | GET DELETE POST | Owned        |
//! | `models/{m}:predictLongRunning`                      | POST          | Create(Operations) |
//! | `operations/{id}`, `models/{m}/operations/{id}`      | GET DELETE    | Owned          |
//! | `interactions`                                       | POST          | Create(Interactions) |
//! | `interactions/{id}`, `interactions/{id}:cancel`      | GET DELETE POST | Owned        |
//! | `fileSearchStores`, `tunedModels`                    | POST / GET    | Create / List  |
//! | `fileSearchStores/{id}/…`, `tunedModels/{id}…`       | any           | Owned          |
//! | `auth_tokens` (Live ephemeral tokens)                | POST          | Create(AuthTokens) |
//! | `/upload/{v}/files`, `/upload/{v}/fileSearchStores/{id}:…` | POST    | Upload         |
//! | anything else under a version prefix                 | any           | Other          |
//!
//! `Other` is forwarded with normal key selection and is never retried once sent.

use http::Method;

/// A kind of resource Google keeps per project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Files,
    CachedContents,
    Batches,
    Operations,
    Interactions,
    FileSearchStores,
    TunedModels,
    /// Live ephemeral tokens: created here, used by Live sessions (`live`).
    AuthTokens,
}

impl Kind {
    /// The collection its names start with.
    pub fn collection(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::CachedContents => "cachedContents",
            Self::Batches => "batches",
            Self::Operations => "operations",
            Self::Interactions => "interactions",
            Self::FileSearchStores => "fileSearchStores",
            Self::TunedModels => "tunedModels",
            Self::AuthTokens => "auth_tokens",
        }
    }

    /// The field a list answer holds its items in.
    pub fn list_field(self) -> &'static str {
        match self {
            Self::Batches | Self::Operations => "operations",
            other => other.collection(),
        }
    }
}

/// What a native method does to resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Creates a resource of this kind; the answer names it.
    Create(Kind),
    /// Acts on the resource the path names (`delete`: its row goes on success).
    Owned { delete: bool },
    /// Lists the caller's resources of this kind, merged over the keys holding them.
    List(Kind),
    /// The resumable (or multipart) upload protocol.
    Upload,
    /// A method this table does not know.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeCall {
    /// The route's name in logs and metrics.
    pub label: &'static str,
    pub act: Act,
}

const fn call(label: &'static str, act: Act) -> NativeCall {
    NativeCall { label, act }
}

const OTHER: NativeCall = call("other", Act::Other);

/// The method at `segs` (the path after the version segment); `upload` for `/upload/…`.
pub fn parse(method: &Method, segs: &[&str], upload: bool) -> NativeCall {
    use Act::*;
    use Kind::*;
    if upload {
        return match (method.as_str(), segs) {
            ("POST", ["files"]) => call("files.upload", Upload),
            ("POST", ["fileSearchStores", _]) => call("fileSearchStores.upload", Upload),
            _ => OTHER,
        };
    }
    let owned = |label| call(label, Owned { delete: false });
    let deleted = |label| call(label, Owned { delete: true });
    match (method.as_str(), segs) {
        ("GET", ["files"]) => call("files.list", List(Files)),
        ("GET", ["files", id]) if id.ends_with(":download") => owned("files.download"),
        ("GET", ["files", _]) => owned("files.get"),
        ("DELETE", ["files", _]) => deleted("files.delete"),
        ("GET", ["cachedContents"]) => call("cachedContents.list", List(CachedContents)),
        ("POST", ["cachedContents"]) => call("cachedContents.create", Create(CachedContents)),
        ("GET", ["cachedContents", _]) => owned("cachedContents.get"),
        ("PATCH", ["cachedContents", _]) => owned("cachedContents.patch"),
        ("DELETE", ["cachedContents", _]) => deleted("cachedContents.delete"),
        ("POST", ["models", m]) if m.ends_with(":batchGenerateContent") => {
            call("batches.create", Create(Batches))
        }
        ("POST", ["models", m]) if m.ends_with(":asyncBatchEmbedContent") => {
            call("batches.createEmbeddings", Create(Batches))
        }
        ("POST", ["models", m]) if m.ends_with(":predictLongRunning") => {
            call("models.predictLongRunning", Create(Operations))
        }
        ("GET", ["batches"]) => call("batches.list", List(Batches)),
        ("POST", ["batches", id]) if id.ends_with(":cancel") => owned("batches.cancel"),
        ("GET", ["batches", _]) => owned("batches.get"),
        ("DELETE", ["batches", _]) => deleted("batches.delete"),
        ("GET", ["operations", _] | ["models", _, "operations", _]) => owned("operations.get"),
        ("DELETE", ["operations", _] | ["models", _, "operations", _]) => {
            deleted("operations.delete")
        }
        ("POST", ["interactions"]) => call("interactions.create", Create(Interactions)),
        ("POST", ["interactions", id]) if id.ends_with(":cancel") => owned("interactions.cancel"),
        ("GET", ["interactions", _]) => owned("interactions.get"),
        ("DELETE", ["interactions", _]) => deleted("interactions.delete"),
        ("POST", ["fileSearchStores"]) => call("fileSearchStores.create", Create(FileSearchStores)),
        ("GET", ["fileSearchStores"]) => call("fileSearchStores.list", List(FileSearchStores)),
        ("DELETE", ["fileSearchStores", _]) => deleted("fileSearchStores.delete"),
        (_, ["fileSearchStores", _, ..]) => owned("fileSearchStores.method"),
        ("POST", ["tunedModels"]) => call("tunedModels.create", Create(TunedModels)),
        ("POST", ["auth_tokens"]) => call("authTokens.create", Create(AuthTokens)),
        ("GET", ["tunedModels"]) => call("tunedModels.list", List(TunedModels)),
        ("DELETE", ["tunedModels", _]) => deleted("tunedModels.delete"),
        (_, ["tunedModels", _, ..]) => owned("tunedModels.method"),
        _ => OTHER,
    }
}

/// The resource a path names (segments after the version), as Google names it:
/// `files/abc` for `files/abc:download`, `models/veo/operations/x`, `fileSearchStores/s`
/// for everything under a store.
pub fn owner_of(segs: &[&str]) -> Option<String> {
    let bare = |s: &str| s.split(':').next().unwrap_or("").to_owned();
    match segs {
        ["models", m, "operations", id, ..] => Some(format!("models/{m}/operations/{}", bare(id))),
        [coll, id, ..] if is_collection(coll) && !bare(id).is_empty() => {
            Some(format!("{coll}/{}", bare(id)))
        }
        _ => None,
    }
}

/// The resource a name an answer gave belongs to: `tunedModels/t/operations/o` belongs to
/// `tunedModels/t`; `models/…/operations/…` is its own.
pub fn owner_of_name(name: &str) -> Option<String> {
    let segs: Vec<&str> = name.split('/').collect();
    owner_of(&segs)
}

fn is_collection(s: &str) -> bool {
    matches!(
        s,
        "files"
            | "cachedContents"
            | "batches"
            | "operations"
            | "interactions"
            | "fileSearchStores"
            | "tunedModels"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(m: Method, path: &str) -> NativeCall {
        let segs: Vec<&str> = path.split('/').collect();
        parse(&m, &segs, false)
    }

    #[test]
    fn known_methods_and_their_acts() {
        assert_eq!(at(Method::GET, "files").act, Act::List(Kind::Files));
        assert_eq!(at(Method::GET, "files/abc").label, "files.get");
        assert_eq!(
            at(Method::GET, "files/abc:download").label,
            "files.download"
        );
        assert_eq!(
            at(Method::DELETE, "files/abc").act,
            Act::Owned { delete: true }
        );
        assert_eq!(
            at(Method::POST, "models/gemini-2.5-flash:batchGenerateContent").act,
            Act::Create(Kind::Batches)
        );
        assert_eq!(
            at(
                Method::POST,
                "models/veo-3.0-generate-001:predictLongRunning"
            )
            .act,
            Act::Create(Kind::Operations)
        );
        assert_eq!(
            at(Method::GET, "models/veo/operations/op1").label,
            "operations.get"
        );
        assert_eq!(
            at(Method::POST, "interactions").act,
            Act::Create(Kind::Interactions)
        );
        assert_eq!(
            at(Method::POST, "interactions/v1_x:cancel").label,
            "interactions.cancel"
        );
        assert_eq!(
            at(Method::POST, "fileSearchStores/s1/documents").act,
            Act::Owned { delete: false }
        );
        assert_eq!(
            at(Method::GET, "batches").act.clone(),
            Act::List(Kind::Batches)
        );
        assert_eq!(Kind::Batches.list_field(), "operations");
        assert_eq!(
            at(Method::POST, "auth_tokens").act,
            Act::Create(Kind::AuthTokens)
        );
        let up = parse(&Method::POST, &["files"], true);
        assert_eq!(up.act, Act::Upload);
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(at(Method::POST, "models/imagen-4:predict"), OTHER);
        assert_eq!(at(Method::GET, "somethingNew/x"), OTHER);
        assert_eq!(at(Method::PUT, "files/abc"), OTHER);
        assert_eq!(parse(&Method::GET, &["files"], true), OTHER);
    }

    #[test]
    fn the_resource_a_path_or_name_belongs_to() {
        let of = |p: &str| owner_of(&p.split('/').collect::<Vec<_>>());
        assert_eq!(of("files/abc:download").as_deref(), Some("files/abc"));
        assert_eq!(of("batches/b1:cancel").as_deref(), Some("batches/b1"));
        assert_eq!(
            of("models/veo/operations/o1").as_deref(),
            Some("models/veo/operations/o1")
        );
        assert_eq!(
            of("fileSearchStores/s/documents/d").as_deref(),
            Some("fileSearchStores/s")
        );
        assert_eq!(of("files"), None);
        assert_eq!(of("files/:x"), None);
        assert_eq!(of("models/gemini-2.5-flash"), None);
        assert_eq!(
            owner_of_name("tunedModels/t1/operations/o").as_deref(),
            Some("tunedModels/t1")
        );
    }
}
