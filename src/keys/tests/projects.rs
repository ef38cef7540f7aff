//! Keys of one Cloud project share its quotas: a project quota hit takes the model out on
//! every key of the project, and the pool counts one quota per project.

use super::*;

fn project_429(project: Option<&str>, shared: bool) -> Outcome {
    Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(30)),
        exhausted: Exhausted::Minute,
        reason: "GenerateRequestsPerMinutePerProjectPerModel-FreeTier".into(),
        project: project.map(str::to_owned),
        shared,
        limits: QuotaLimits::default(),
    }
}

#[test]
fn a_project_quota_hit_takes_the_model_out_on_every_key_of_the_project() {
    let (pool, _rx) = pool_with(4, PoolConfig::default());
    let e = pool.entries();
    assert_eq!(pool.quotas(), 4, "four keys of no known project");
    pool.set_project(&e[1], Some("7".into()));
    pool.set_project(&e[2], Some("8".into()));
    // Key 0 learns it is of project 7 from the 429 and takes key 1 with it.
    pool.report(&e[0], "pro", &project_429(Some("7"), true), T0);
    assert_eq!(e[0].project().as_deref(), Some("7"), "learned");
    assert_eq!(e[0].status("pro", T0).0, KeyStatus::Cooling);
    assert_eq!(e[1].status("pro", T0).0, KeyStatus::Cooling, "sibling");
    assert_eq!(
        e[1].status("flash", T0).0,
        KeyStatus::Active,
        "other models"
    );
    for other in [&e[2], &e[3]] {
        assert_eq!(other.status("pro", T0).0, KeyStatus::Active);
    }
    assert_eq!(pool.quotas(), 3, "project 7, project 8, and key 3");

    // A bare 429 (no quotas named) is the key's alone; a learned project does not
    // replace one the admin set.
    pool.report(&e[2], "flash", &project_429(Some("9"), false), T0);
    assert_eq!(e[2].project().as_deref(), Some("8"));
    assert_eq!(e[2].status("flash", T0).0, KeyStatus::Cooling);
    assert_eq!(e[1].status("flash", T0).0, KeyStatus::Active);
    pool.set_project(&e[0], None);
    assert_eq!(pool.quotas(), 4);
}
