use super::*;

pub fn rec(name: &str, key: &str, user: &str, expires_ms: i64) -> ResourceRecord {
    ResourceRecord {
        name: name.into(),
        key_id: key.into(),
        user_id: user.into(),
        created_ms: 1,
        expires_ms,
        size: Some(7),
        upstream: None,
    }
}

/// Owner rows by name and by user, replaced, deleted and pruned at their expiry.
pub async fn affinity_rows(store: &Store) {
    assert_eq!(store.resource("files/a").await.unwrap(), None);
    assert!(store.resources(None).await.unwrap().is_empty());
    store
        .put_resource(rec("files/a", "k1", "alice", 100))
        .await
        .unwrap();
    store
        .put_resource(rec("cachedContents/c", "k2", "alice", 300))
        .await
        .unwrap();
    store
        .put_resource(rec("files/b", "k2", "bob", 200))
        .await
        .unwrap();
    assert_eq!(
        store.resource("files/a").await.unwrap(),
        Some(rec("files/a", "k1", "alice", 100))
    );
    let names = |v: Vec<ResourceRecord>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.resources(Some("alice")).await.unwrap()),
        ["cachedContents/c", "files/a"]
    );
    assert_eq!(
        names(store.resources(Some("bob")).await.unwrap()),
        ["files/b"]
    );
    assert_eq!(store.resources(None).await.unwrap().len(), 3);
    // Replaced: a later expiry and another user move its index entries along.
    store
        .put_resource(rec("files/a", "k1", "bob", 400))
        .await
        .unwrap();
    assert_eq!(
        names(store.resources(Some("alice")).await.unwrap()),
        ["cachedContents/c"]
    );
    assert_eq!(
        names(store.resources(Some("bob")).await.unwrap()),
        ["files/a", "files/b"]
    );
    // Pruned strictly before `now`; the replaced row's old expiry is gone with it.
    assert_eq!(store.prune_resources(200).await.unwrap(), 0);
    assert_eq!(store.prune_resources(201).await.unwrap(), 1);
    assert_eq!(store.resource("files/b").await.unwrap(), None);
    assert_eq!(
        names(store.resources(Some("bob")).await.unwrap()),
        ["files/a"]
    );
    store.delete_resource("files/a").await.unwrap();
    store.delete_resource("files/none").await.unwrap();
    assert!(store.resources(Some("bob")).await.unwrap().is_empty());
    assert_eq!(store.prune_resources(i64::MAX).await.unwrap(), 1);
    assert!(store.resources(None).await.unwrap().is_empty());
    let op = rec("models/veo/operations/o1", "k1", "alice", 9);
    assert_eq!(op.kind(), "operations");
    assert_eq!(rec("upload/AU1", "k", "u", 1).kind(), "upload");
}
