//! The diagnosis from fixture objects: each way a stack fails, and each transient state, in words.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use super::fixtures::{warning, *};
use super::output::{Explained, Kind, explain};
use super::pods::{Exit, Seen, seen};
use super::*;
use crate::builders::{ExistingSecrets, desired};
use crate::crd::{ComponentStatus, ExternalSpec, SecretKeyRef};
use crate::fixtures::{all_ready, minimal_stack};

const MYSQL: &str = "shop-mysql.mall.svc.cluster.local:3306";

/// Every child of `stack` settled, observed at `T0 + 95 s`.
fn settled(stack: &MallStack) -> Observed {
    let mut observed = all_ready(&desired(stack, &ExistingSecrets::new()));
    observed.time = Some(at(95));
    observed
}

/// The migrations of `services` still running (their Jobs report nothing yet).
fn migrating(observed: &mut Observed, stack: &MallStack, services: &[Service]) {
    for service in services {
        observed.jobs.get_mut(&migration_job_name(stack, *service)).unwrap().status = None;
    }
}

fn add(observed: &mut Observed, pod: &Value) {
    observed.pods.push(typed(pod));
}

fn log(observed: &mut Observed, pod: &Value, tail: &str) {
    let key = (
        pod["metadata"]["name"].as_str().unwrap().to_owned(),
        pod["spec"]["containers"][0]["name"].as_str().unwrap().to_owned(),
    );
    observed.logs.insert(key, Ok(tail.to_owned()));
}

fn external(mut stack: MallStack) -> MallStack {
    stack.spec.database.managed = None;
    stack.spec.database.external =
        Some(ExternalSpec { secret_ref: SecretKeyRef { name: "mall-db".into(), key: "url".into() } });
    stack
}

fn finding(reason: &str, text: &str) -> Finding {
    Finding { reason: reason.into(), text: text.into(), degraded: reason != reasons::WAITING }
}

// ---- what `mall` prints ----

#[test]
fn a_refused_password_names_the_user() {
    let explained = explain(&access_denied_log("auth", MYSQL), Some(MYSQL)).unwrap();
    assert_eq!(
        explained,
        Explained { kind: Kind::PasswordRefused, text: "database refused the password for user mall".into() }
    );
    let grant = "Error: x\n\nCaused by:\n    0: error returned from database: 1044 (42000): Access denied for user 'mall'@'%' to database 'mall_auth'";
    assert_eq!(explain(grant, None).unwrap().text, "database user mall may not use database mall_auth");
}

#[test]
fn an_unreachable_database_names_where_it_was_looked_for() {
    let refused = explain(&connection_refused_log("cart", "db.example.com:3307"), Some(MYSQL)).unwrap();
    assert_eq!(
        refused,
        Explained {
            kind: Kind::Unreachable,
            text: "database unreachable at db.example.com:3307 (connection refused)".into()
        }
    );
    // No URL in the log: where the managed MySQL is.
    let lookup = "Error: cannot open the auth database\n\nCaused by:\n    0: database error: error communicating with database: failed to lookup address information: Name or service not known";
    assert_eq!(
        explain(lookup, Some(MYSQL)).unwrap().text,
        format!("database unreachable at {MYSQL} (name not resolved)")
    );
    let silent = "Error: cannot open the auth database at mysql://root@10.0.0.9/mall_auth\n\nCaused by:\n    0: MySQL server at mysql://root@10.0.0.9/mall_auth did not answer within 10s";
    assert_eq!(explain(silent, None).unwrap().text, "database unreachable at 10.0.0.9:3306 (no answer)");
    assert_eq!(
        explain("Connection refused (os error 111)", None).unwrap().text,
        "database unreachable (connection refused)"
    );
}

#[test]
fn an_unreachable_cache_is_not_called_the_database() {
    let gateway = "Error: cannot reach the cache\n\nCaused by:\n    Redis at redis://shop-redis:6379 did not answer within 10s";
    assert_eq!(
        explain(gateway, Some(MYSQL)).unwrap(),
        Explained { kind: Kind::Other, text: "cache unreachable (no answer)".into() }
    );
}

#[test]
fn anything_else_is_the_last_words_without_decoration() {
    assert_eq!(
        explain(
            "{\"level\":\"INFO\",\"message\":\"cache ready\"}\nError: password must be at least 8 characters\n",
            None
        ),
        Some(Explained { kind: Kind::Other, text: "password must be at least 8 characters".into() })
    );
    // tracing's JSON lines: message and error, not the timestamp.
    let json = r#"{"timestamp":"2025-05-01T10:00:59Z","level":"ERROR","message":"cannot bind","error":"address in use","target":"mall"}"#;
    assert_eq!(explain(json, None).unwrap().text, "cannot bind: address in use");
    assert_eq!(explain("\n\n", None), None);
    let long = "x".repeat(400);
    let text = explain(&long, None).unwrap().text;
    assert_eq!(text.chars().count(), 160);
    assert!(text.ends_with('…'));
}

// ---- one pod ----

#[test]
fn pods_say_what_they_wait_for_and_since_when() {
    let stack = minimal_stack();
    let now = Some(at(95));
    let fresh = pod("p", "cart", "cart", "img");
    assert_eq!(seen(&typed(&fresh), now), Seen::Waiting("pod not scheduled yet".into()));
    let creating = waiting(pod("p", "cart", "cart", "img"), "ContainerCreating", "");
    assert_eq!(seen(&typed(&creating), now), Seen::Waiting("pod starting for 1m".into()));
    assert_eq!(seen(&typed(&creating), None), Seen::Waiting("pod starting".into()));
    let mysql = running(workload_pod(&stack, "mysql", "0"), false, 70);
    assert_eq!(seen(&typed(&mysql), now), Seen::Waiting("pod running, not ready for 20s".into()));
    let ready = running(workload_pod(&stack, "mysql", "0"), true, 70);
    assert_eq!(seen(&typed(&ready), now), Seen::Fine);
    let mut leaving = crash_looping(pod("p", "cart", "cart", "img"), 1, 2);
    leaving["metadata"]["deletionTimestamp"] = json!(at(90).to_string());
    assert_eq!(seen(&typed(&leaving), now), Seen::Fine, "a terminating pod is not the news");
}

#[test]
fn pods_say_what_is_wrong() {
    let now = Some(at(95));
    let never = waiting(
        pod("p", "gateway", "gateway", "lab.local/mall:nope"),
        "ErrImageNeverPull",
        "Container image \"lab.local/mall:nope\" is not present with pull policy of Never",
    );
    assert_eq!(
        seen(&typed(&never), now),
        Seen::Problem(finding(
            reasons::IMAGE_PULL_FAILED,
            "image lab.local/mall:nope cannot be pulled (ErrImageNeverPull)"
        ))
    );
    let missing = waiting(
        pod("p", "gateway", "gateway", "ghcr.io/x/mall:9.9.9"),
        "ErrImagePull",
        "rpc error: code = NotFound desc = failed to pull and unpack image \"ghcr.io/x/mall:9.9.9\": not found",
    );
    assert_eq!(
        seen(&typed(&missing), now),
        Seen::Problem(finding(
            reasons::IMAGE_PULL_FAILED,
            "image ghcr.io/x/mall:9.9.9 cannot be pulled (not found)"
        ))
    );
    let private = waiting(
        pod("p", "gateway", "gateway", "r.io/m:1"),
        "ErrImagePull",
        "failed to authorize: 401 Unauthorized",
    );
    assert_eq!(
        seen(&typed(&private), now),
        Seen::Problem(finding(
            reasons::IMAGE_PULL_FAILED,
            "image r.io/m:1 cannot be pulled (access denied by the registry)"
        ))
    );
    let secret = waiting(
        pod("p", "cart", "cart", "img"),
        "CreateContainerConfigError",
        "secret \"mall-db\" not found",
    );
    assert_eq!(
        seen(&typed(&secret), now),
        Seen::Problem(finding(reasons::CANNOT_START, "cannot start: secret \"mall-db\" not found"))
    );
    let nowhere = unschedulable(
        pod("p", "cart", "cart", "img"),
        "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
    );
    assert_eq!(
        seen(&typed(&nowhere), now),
        Seen::Problem(finding(
            reasons::UNSCHEDULABLE,
            "cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory."
        ))
    );
}

#[test]
fn an_exited_container_is_named_with_its_code_and_which_log_to_read() {
    let looping = crash_looping(pod("p", "cart", "cart", "img"), 1, 2);
    let Seen::Exited(exit) = seen(&typed(&looping), Some(at(95))) else { panic!() };
    assert_eq!(
        exit,
        Exit {
            pod: "p".into(),
            container: "cart".into(),
            code: 1,
            reason: Some("Error".into()),
            previous: true,
            ran_for: Some(2),
            finished: Some(at(60)),
        }
    );
    // Just exited, not restarted yet: its current log.
    let mut exited = looping.clone();
    let status = &mut exited["status"]["containerStatuses"][0];
    status["state"] = json!({"terminated": status["lastState"]["terminated"].clone()});
    status["lastState"] = json!({});
    let Seen::Exited(exit) = seen(&typed(&exited), Some(at(95))) else { panic!() };
    assert!(!exit.previous);
    // Running again after an exit long ago, and ready: fine.
    let mut recovered = running(pod("p", "cart", "cart", "img"), true, 80);
    recovered["status"]["containerStatuses"][0]["lastState"] =
        looping["status"]["containerStatuses"][0]["lastState"].clone();
    assert_eq!(seen(&typed(&recovered), Some(at(95))), Seen::Fine);
    // Running again, not ready, the exit recent: still the exit (no flapping while it crash-loops).
    recovered["status"]["containerStatuses"][0]["ready"] = json!(false);
    recovered["status"]["conditions"][1]["status"] = json!("False");
    assert!(matches!(seen(&typed(&recovered), Some(at(95))), Seen::Exited(_)));
    // Long after that exit: it is only not ready.
    assert_eq!(
        seen(&typed(&recovered), Some(at(760))),
        Seen::Waiting("pod running, not ready for 11m".into())
    );
}

// ---- a whole stack ----

#[test]
fn a_settled_stack_has_nothing_to_say() {
    let stack = minimal_stack();
    let observed = settled(&stack);
    assert_eq!(diagnose(&stack, &observed, None), Diagnosis::default());
    assert!(logs_wanted(&stack, &observed).is_empty());
    assert!(!needs_events(&stack, &observed));
}

/// The issue's cluster: the claim outlived an uninstall, its Secret did not.
#[test]
fn wrong_database_password() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    migrating(&mut observed, &stack, &Service::ALL);
    add(&mut observed, &running(workload_pod(&stack, "mysql", "0"), true, 30));
    let mut wanted = Vec::new();
    for service in Service::ALL {
        let pod = crash_looping(migration_pod(&stack, service, "x1"), 1, 1);
        add(&mut observed, &pod);
        wanted.push(LogRequest {
            pod: pod["metadata"]["name"].as_str().unwrap().into(),
            container: "migrate".into(),
            previous: true,
        });
        log(&mut observed, &pod, &access_denied_log(service.name(), MYSQL));
    }
    assert_eq!(logs_wanted(&stack, &observed), wanted, "one log per failing migration, the previous run's");
    let diagnosis = diagnose(&stack, &observed, None);
    assert_eq!(
        diagnosis.of("auth"),
        Some(&finding(reasons::MIGRATION_FAILED, "database refused the password for user mall"))
    );
    assert_eq!(
        diagnosis.degraded(),
        Some((
            "MigrationFailed".into(),
            "auth, user, product, cart, order, payment, checkout: database refused the password for user mall".into()
        ))
    );

    // Its claim is older than its Secret: the data, and the password, are an earlier install's.
    observed.claims.push(typed(&mysql_claim(&stack, "standard", "Bound")));
    observed.secrets_created.insert("shop-mysql".into(), at(0));
    assert_eq!(
        diagnose(&stack, &observed, None).of("auth").unwrap().text,
        "database refused the password for user mall"
    );
    observed.secrets_created.insert("shop-mysql".into(), at(50));
    assert_eq!(
        diagnose(&stack, &observed, None).of("auth").unwrap().text,
        "database refused the password for user mall (volume claim data-shop-mysql-0 is older than Secret \
         shop-mysql: MySQL keeps the password of an earlier install)"
    );
}

#[test]
fn database_unreachable() {
    let stack = external(minimal_stack());
    let mut observed = settled(&stack);
    migrating(&mut observed, &stack, &[Service::Auth]);
    let pod = crash_looping(migration_pod(&stack, Service::Auth, "x1"), 1, 1);
    add(&mut observed, &pod);
    log(&mut observed, &pod, &connection_refused_log("auth", "db.example.com:1"));
    let diagnosis = diagnose(&stack, &observed, None);
    assert_eq!(
        diagnosis.degraded(),
        Some((
            "MigrationFailed".into(),
            "auth: database unreachable at db.example.com:1 (connection refused)".into()
        ))
    );
}

/// A fresh install: migrations start before MySQL is up. That is awaited, not a failure.
#[test]
fn migrations_wait_out_a_managed_mysql_that_is_starting() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    migrating(&mut observed, &stack, &Service::ALL);
    observed.stateful_sets.values_mut().for_each(|s| s.status.as_mut().unwrap().ready_replicas = Some(0));
    add(&mut observed, &running(workload_pod(&stack, "mysql", "0"), false, 75));
    let pod = crash_looping(migration_pod(&stack, Service::Auth, "x1"), 1, 1);
    add(&mut observed, &pod);
    log(&mut observed, &pod, &connection_refused_log("auth", MYSQL));
    let diagnosis = diagnose(&stack, &observed, None);
    assert_eq!(diagnosis.degraded(), None);
    assert_eq!(diagnosis.of("mysql"), Some(&finding(reasons::WAITING, "pod running, not ready for 20s")));
    assert_eq!(diagnosis.of("auth"), Some(&finding(reasons::WAITING, "migration waits for the database")));
    assert_eq!(diagnosis.of("user"), Some(&finding(reasons::WAITING, "migration pod not created yet")));
    assert_eq!(
        diagnosis.waiting().unwrap(),
        "waiting for mysql: pod running, not ready for 20s (and 7 more components)"
    );

    // MySQL became ready after that failure: still only a retry to wait for.
    let mysql =
        observed.pods.iter_mut().find(|p| p.metadata.name.as_deref() == Some("shop-mysql-0")).unwrap();
    *mysql = typed(&running(workload_pod(&stack, "mysql", "0"), true, 75));
    assert_eq!(
        diagnose(&stack, &observed, None).of("auth"),
        Some(&finding(reasons::WAITING, "migration waits for the database"))
    );
    // Failing again once MySQL is ready: a problem.
    *observed.pods.iter_mut().find(|p| p.metadata.name.as_deref() == Some("shop-mysql-0")).unwrap() =
        typed(&running(workload_pod(&stack, "mysql", "0"), true, 30));
    assert_eq!(
        diagnose(&stack, &observed, None).of("auth"),
        Some(&finding(
            reasons::MIGRATION_FAILED,
            &format!("database unreachable at {MYSQL} (connection refused)")
        ))
    );
}

#[test]
fn image_that_cannot_be_pulled() {
    let mut stack = minimal_stack();
    stack.spec.image.repository = "lab.local/mall".into();
    stack.spec.image.tag = "nope".into();
    let mut observed = settled(&stack);
    migrating(&mut observed, &stack, &Service::ALL);
    for service in Service::ALL {
        add(
            &mut observed,
            &waiting(migration_pod(&stack, service, "x1"), "ErrImageNeverPull", "not present"),
        );
    }
    let gateway = observed.deployments.get_mut("shop-gateway").unwrap();
    gateway.status.as_mut().unwrap().ready_replicas = Some(0);
    add(
        &mut observed,
        &waiting(workload_pod(&stack, "gateway", "5d8f-abcde"), "ErrImageNeverPull", "not present"),
    );
    assert!(logs_wanted(&stack, &observed).is_empty(), "nothing ran: no log to read");
    assert_eq!(
        diagnose(&stack, &observed, None).degraded(),
        Some((
            "ImagePullFailed".into(),
            "auth, user, product, cart, order, payment, checkout, gateway: image lab.local/mall:nope cannot be pulled (ErrImageNeverPull)".into()
        ))
    );
}

#[test]
fn a_pull_back_off_keeps_the_reason_seen_before() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    observed.deployments.get_mut("shop-gateway").unwrap().status.as_mut().unwrap().ready_replicas = Some(0);
    add(
        &mut observed,
        &waiting(workload_pod(&stack, "gateway", "a"), "ImagePullBackOff", "Back-off pulling image"),
    );
    let image = stack.spec.image.reference();
    let backoff =
        finding(reasons::IMAGE_PULL_FAILED, &format!("image {image} cannot be pulled (ImagePullBackOff)"));
    assert_eq!(diagnose(&stack, &observed, None).of("gateway"), Some(&backoff));
    let mut previous = MallStackStatus::default();
    let known = format!("image {image} cannot be pulled (not found)");
    previous.components.insert(
        "gateway".into(),
        ComponentStatus {
            ready: 0,
            desired: 1,
            reason: Some("ImagePullFailed".into()),
            message: Some(known.clone()),
            restarted: None,
        },
    );
    assert_eq!(
        diagnose(&stack, &observed, Some(&previous)).of("gateway"),
        Some(&finding(reasons::IMAGE_PULL_FAILED, &known))
    );
}

#[test]
fn a_service_that_exits_at_start() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    observed.deployments.get_mut("shop-user").unwrap().status.as_mut().unwrap().ready_replicas = Some(0);
    let pod = crash_looping(workload_pod(&stack, "user", "7c9d-x2x7k"), 1, 2);
    add(&mut observed, &pod);
    assert_eq!(
        logs_wanted(&stack, &observed),
        [LogRequest { pod: "shop-user-7c9d-x2x7k".into(), container: "user".into(), previous: true }]
    );
    // Before its log is read: the exit alone.
    assert_eq!(
        diagnose(&stack, &observed, None).degraded(),
        Some(("CrashLoop".into(), "user: exits at start (exit code 1)".into()))
    );
    log(
        &mut observed,
        &pod,
        "{\"level\":\"INFO\",\"message\":\"cache ready\"}\nError: password must be at least 8 characters\n",
    );
    assert_eq!(
        diagnose(&stack, &observed, None).degraded(),
        Some((
            "CrashLoop".into(),
            "user: exits at start (exit code 1): password must be at least 8 characters".into()
        ))
    );
    // A log the API server would not give.
    observed.logs.insert(
        ("shop-user-7c9d-x2x7k".into(), "user".into()),
        Err("pods \"shop-user-7c9d-x2x7k\" is forbidden".into()),
    );
    assert_eq!(
        diagnose(&stack, &observed, None).of("user").unwrap().text,
        "exits at start (exit code 1) (its log cannot be read: pods \"shop-user-7c9d-x2x7k\" is forbidden)"
    );
    // Killed for memory, after a while.
    let mut oom = crash_looping(workload_pod(&stack, "user", "7c9d-x2x7k"), 137, 300);
    oom["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] = json!("OOMKilled");
    observed.pods = vec![typed(&oom)];
    assert_eq!(
        diagnose(&stack, &observed, None).of("user"),
        Some(&finding(reasons::CRASH_LOOP, "killed for exceeding its memory limit (OOMKilled)"))
    );
    let late = crash_looping(workload_pod(&stack, "user", "7c9d-x2x7k"), 2, 300);
    observed.pods = vec![typed(&late)];
    observed.logs.clear();
    assert_eq!(diagnose(&stack, &observed, None).of("user").unwrap().text, "exits after 5m (exit code 2)");
}

#[test]
fn a_storage_class_that_does_not_exist() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    observed.stateful_sets.values_mut().for_each(|s| s.status.as_mut().unwrap().ready_replicas = Some(0));
    add(
        &mut observed,
        &unschedulable(
            workload_pod(&stack, "mysql", "0"),
            "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
        ),
    );
    observed.claims.push(typed(&mysql_claim(&stack, "fast-ssd", "Pending")));
    assert!(needs_events(&stack, &observed), "a Pending claim says nothing by itself");
    // Before the events are read: a pending claim is awaited.
    assert_eq!(
        diagnose(&stack, &observed, None).of("mysql"),
        Some(&finding(reasons::WAITING, "volume claim data-shop-mysql-0 pending for 1m"))
    );
    observed.events = vec![
        typed(&warning(
            "PersistentVolumeClaim",
            "data-shop-mysql-0",
            "ProvisioningFailed",
            "storageclass.storage.k8s.io \"slow\" not found",
            20,
        )),
        typed(&warning(
            "PersistentVolumeClaim",
            "data-shop-mysql-0",
            "ProvisioningFailed",
            "storageclass.storage.k8s.io \"fast-ssd\" not found",
            90,
        )),
        typed(&warning("PersistentVolumeClaim", "data-other-0", "ProvisioningFailed", "unrelated", 94)),
    ];
    assert_eq!(
        diagnose(&stack, &observed, None).degraded(),
        Some((
            "VolumeProvisioningFailed".into(),
            "mysql: volume claim data-shop-mysql-0 cannot be provisioned: storageclass.storage.k8s.io \"fast-ssd\" not found".into()
        ))
    );
}

#[test]
fn a_quota_that_forbids_one_more_pod() {
    let mut stack = minimal_stack();
    stack.spec.services.cart.replicas = 2;
    let mut observed = settled(&stack);
    let cart: &mut Deployment = observed.deployments.get_mut("shop-cart").unwrap();
    cart.status = Some(typed(&json!({
        "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
        "conditions": [{
            "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": "pods \"shop-cart-6d4b8c7f9-x2x7k\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=12, limited: pods=12",
        }],
    })));
    add(&mut observed, &running(workload_pod(&stack, "cart", "6d4b8c7f9-aaaaa"), true, 10));
    assert_eq!(
        diagnose(&stack, &observed, None).degraded(),
        Some(("QuotaExceeded".into(), "cart: cannot create a pod: exceeded quota: pods, requested: pods=1, used: pods=12, limited: pods=12".into()))
    );
    // Another admission refusal.
    let cart = observed.deployments.get_mut("shop-cart").unwrap();
    cart.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].message =
        Some("pods \"shop-cart-6d4b8c7f9-x2x7k\" is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true".into());
    assert_eq!(
        diagnose(&stack, &observed, None).degraded(),
        Some((
            "PodsRefused".into(),
            "cart: cannot create a pod: violates PodSecurity \"restricted:latest\": runAsNonRoot != true"
                .into()
        ))
    );
}

#[test]
fn a_migration_job_refused_its_pod_or_given_up() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    migrating(&mut observed, &stack, &[Service::Order]);
    let job = migration_job_name(&stack, Service::Order);
    assert!(needs_events(&stack, &observed), "a running Job without a pod");
    assert_eq!(
        diagnose(&stack, &observed, None).of("order"),
        Some(&finding(reasons::WAITING, "migration pod not created yet"))
    );
    observed.events = vec![typed(&warning(
        "Job",
        &job,
        "FailedCreate",
        &format!(
            "Error creating: pods \"{job}-abcde\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3"
        ),
        50,
    ))];
    assert_eq!(
        diagnose(&stack, &observed, None).of("order"),
        Some(&finding(
            reasons::QUOTA_EXCEEDED,
            "cannot create a pod: exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3"
        ))
    );
    observed.events.clear();
    observed.jobs.get_mut(&job).unwrap().status = Some(typed(&json!({
        "failed": 7,
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}],
    })));
    assert!(!needs_events(&stack, &observed));
    assert_eq!(
        diagnose(&stack, &observed, None).of("order"),
        Some(&finding(
            reasons::MIGRATION_FAILED,
            "migration Job failed: Job has reached the specified backoff limit"
        ))
    );
}

/// A failed migration Job is deleted and run again: what its failure was stays until it succeeds.
#[test]
fn a_migration_failure_is_kept_while_its_job_runs_again() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    migrating(&mut observed, &stack, &[Service::Auth]);
    add(&mut observed, &waiting(migration_pod(&stack, Service::Auth, "x2"), "ContainerCreating", ""));
    let mut previous = MallStackStatus::default();
    let known = "database refused the password for user mall";
    previous.components.insert(
        "auth".into(),
        ComponentStatus {
            ready: 0,
            desired: 1,
            reason: Some("MigrationFailed".into()),
            message: Some(known.into()),
            restarted: None,
        },
    );
    assert_eq!(
        diagnose(&stack, &observed, None).of("auth"),
        Some(&finding(reasons::WAITING, "migration pod starting for 1m"))
    );
    assert_eq!(
        diagnose(&stack, &observed, Some(&previous)).of("auth"),
        Some(&finding(reasons::MIGRATION_FAILED, known))
    );
    // It succeeded: gone.
    let settled = settled(&stack);
    assert_eq!(diagnose(&stack, &settled, Some(&previous)).of("auth"), None);
}

#[test]
fn problems_come_before_waits_and_are_counted() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    for name in ["shop-cart", "shop-order", "shop-gateway"] {
        observed.deployments.get_mut(name).unwrap().status.as_mut().unwrap().ready_replicas = Some(0);
    }
    add(&mut observed, &waiting(workload_pod(&stack, "cart", "a"), "ContainerCreating", ""));
    add(
        &mut observed,
        &waiting(
            workload_pod(&stack, "order", "a"),
            "CreateContainerConfigError",
            "secret \"mall-redis\" not found",
        ),
    );
    add(
        &mut observed,
        &waiting(
            workload_pod(&stack, "gateway", "a"),
            "CreateContainerConfigError",
            "configmap \"shop-config\" not found",
        ),
    );
    let diagnosis = diagnose(&stack, &observed, None);
    assert_eq!(
        diagnosis.degraded(),
        Some((
            "CannotStart".into(),
            "order: cannot start: secret \"mall-redis\" not found (and 1 more problem)".into()
        ))
    );
    assert_eq!(diagnosis.waiting().unwrap(), "waiting for cart: pod starting for 1m");
    let order: Vec<&str> = diagnosis.findings.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(order, ["cart", "order", "gateway"], "in the order trouble propagates");
}

#[test]
fn a_deployment_without_pods_or_stuck() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    let cart = observed.deployments.get_mut("shop-cart").unwrap();
    cart.status.as_mut().unwrap().ready_replicas = Some(0);
    assert_eq!(
        diagnose(&stack, &observed, None).of("cart"),
        Some(&finding(reasons::WAITING, "0/1 pods ready"))
    );
    let cart = observed.deployments.get_mut("shop-cart").unwrap();
    cart.status.as_mut().unwrap().conditions = Some(vec![typed(&json!({
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet \"shop-cart-5f\" has timed out progressing.",
    }))]);
    assert_eq!(
        diagnose(&stack, &observed, None).of("cart"),
        Some(&finding(
            reasons::ROLLOUT_STUCK,
            "rollout stopped: ReplicaSet \"shop-cart-5f\" has timed out progressing."
        ))
    );
}

/// New pods of a rollout are awaited even while enough old ones serve; once they crash, that is the news.
#[test]
fn a_rollout_is_watched_until_its_new_pods_serve() {
    let stack = minimal_stack();
    let mut observed = settled(&stack);
    let user = observed.deployments.get_mut("shop-user").unwrap();
    user.metadata.generation = Some(2);
    let status = user.status.as_mut().unwrap();
    status.observed_generation = Some(2);
    (status.replicas, status.updated_replicas, status.ready_replicas) = (Some(2), Some(1), Some(1));
    add(&mut observed, &running(workload_pod(&stack, "user", "old-aaaaa"), true, 10));
    add(&mut observed, &waiting(workload_pod(&stack, "user", "new-bbbbb"), "ContainerCreating", ""));
    assert_eq!(
        diagnose(&stack, &observed, None).of("user"),
        Some(&finding(reasons::WAITING, "rolling out: 1/1 pods updated"))
    );
    observed.pods[1] = typed(&crash_looping(workload_pod(&stack, "user", "new-bbbbb"), 1, 1));
    assert_eq!(
        diagnose(&stack, &observed, None).of("user"),
        Some(&finding(reasons::CRASH_LOOP, "exits at start (exit code 1)"))
    );
    // Not seen by the Deployment controller yet.
    observed.pods.clear();
    let user = observed.deployments.get_mut("shop-user").unwrap();
    user.metadata.generation = Some(3);
    let status = user.status.as_mut().unwrap();
    (status.replicas, status.updated_replicas) = (Some(1), Some(1));
    assert_eq!(
        diagnose(&stack, &observed, None).of("user"),
        Some(&finding(reasons::WAITING, "rolling out: 1/1 pods updated"))
    );
    let user = observed.deployments.get_mut("shop-user").unwrap();
    user.status.as_mut().unwrap().observed_generation = Some(3);
    assert_eq!(diagnose(&stack, &observed, None).of("user"), None, "rolled out");
}

#[test]
fn durations_are_coarse() {
    assert_eq!(
        [0, 9, 10, 59, 60, 3599, 7200].map(duration),
        ["<10s", "<10s", "10s", "50s", "1m", "59m", "2h"]
    );
}
