//! Whole reconciles of broken stacks against the scripted API server: given what the cluster holds (the
//! stack's children, pods, claims, events and the logs of failed containers), every request is asserted
//! and the stack says exactly why it is not Ready.

use crate::crd::{ExternalSpec, PullPolicy, SecretKeyRef, Service};
use crate::diagnosis::fixtures::{
    access_denied_log, connection_refused_log, crash_looping, migration_pod, mysql_claim, running,
    unschedulable, waiting, warning, workload_pod,
};

use super::*;

const EVENTS_CORE: &str = "/api/v1/namespaces/mall/events";

/// What the cluster holds before the reconcile.
#[derive(Default)]
struct Cluster {
    secrets: Vec<Value>,
    jobs: Vec<Value>,
    deployments: Vec<Value>,
    sts: Vec<Value>,
    pods: Vec<Value>,
    claims: Vec<Value>,
    /// The Warning events, when the reconcile needs to read them.
    events: Option<Vec<Value>>,
    /// (pod, container, answer): the failed containers whose logs are read, in order; `Err` is refused.
    logs: Vec<(String, String, Result<String, u16>)>,
}

/// Plays the reads of a reconcile of a troubled stack.
async fn observe(server: &mut ApiServerVerifier, cluster: Cluster) {
    server.list(SECRETS, "Secret", with_identity(cluster.secrets)).await;
    server.list(JOBS, "Job", cluster.jobs).await;
    server.list(DEPLOYMENTS, "Deployment", cluster.deployments).await;
    server.list(STATEFULSETS, "StatefulSet", cluster.sts).await;
    server.list(MONITORS, "ServiceMonitor", vec![]).await;
    server.list(PODS, "Pod", cluster.pods).await;
    server.list(CLAIMS, "PersistentVolumeClaim", cluster.claims).await;
    if let Some(events) = cluster.events {
        let received = server.expect(Method::GET, EVENTS_CORE).await;
        assert_eq!(received.query, "&fieldSelector=type%3DWarning", "only Warning events");
        received.ok(&json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": events}));
    }
    for (pod, container, answer) in cluster.logs {
        let received = server.expect(Method::GET, &format!("{PODS}/{pod}/log")).await;
        assert_eq!(
            received.query.trim_start_matches('&'),
            format!("container={container}&limitBytes=4096&previous=true&tailLines=10"),
            "the last lines of the previous (failed) run, bounded"
        );
        match answer {
            Ok(text) => received.text(&text),
            Err(code) => received.respond(
                StatusCode::from_u16(code).unwrap(),
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code,
                        "reason": "Forbidden", "message": format!("pods \"{pod}\" is forbidden: User \"system:serviceaccount:mall:mall-operator\" cannot get resource \"pods/log\"")}),
            ),
        }
    }
}

/// Runs one reconcile of `stack` over `cluster`, answering the applies of `expected` with `answer`;
/// returns the status written and the Degraded event's note (the reconcile must request a retry in 15 s).
/// `migrated`: the migrations are done, so a `Migrated` event follows.
async fn reconcile_broken(
    stack: MallStack,
    cluster: Cluster,
    expected: Vec<(String, Value)>,
    answer: impl Fn(&Value) -> Value + Send + 'static,
    degraded_reason: &'static str,
    migrated: bool,
) -> (Value, String) {
    let (client, mut server) = mock_client();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let stack = stack.clone();
        async move {
            observe(&mut server, cluster).await;
            applies(&mut server, &expected, answer).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let event = event(&mut server, "Warning", degraded_reason).await;
            if migrated {
                super::event(&mut server, "Normal", "Migrated").await;
            }
            tx.send((status, event["note"].as_str().unwrap_or_default().to_owned())).ok();
        }
    };
    let action = run(stack, context(client), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    rx.await.unwrap()
}

/// Asserts the Degraded condition, and that Ready and the problem column say the same.
fn assert_degraded(status: &Value, note: &str, reason: &str, message: &str) {
    let degraded = condition(status, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str(), degraded["message"].as_str()),
        (Some("True"), Some(reason), Some(message))
    );
    let ready = condition(status, "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some(reason)));
    assert_eq!(condition(status, "Progressing")["status"], "False");
    assert_eq!(status["problem"], format!("{reason}: {message}"));
    assert_eq!(note, message, "the event tells the same");
}

/// A Job as stored while it runs (no status yet).
fn running_job(body: &Value) -> Value {
    body.clone()
}

fn is_job(body: &Value) -> bool {
    body["kind"] == "Job"
}

fn name_of(body: &Value) -> &str {
    body["metadata"]["name"].as_str().unwrap()
}

fn is_deployment(body: &Value, name: &str) -> bool {
    body["kind"] == "Deployment" && name_of(body) == name
}

fn pod_name(pod: &Value) -> String {
    name_of(pod).to_owned()
}

fn external_database(mut stack: MallStack) -> MallStack {
    stack.spec.database.managed = None;
    stack.spec.database.external =
        Some(ExternalSpec { secret_ref: SecretKeyRef { name: "mall-db".into(), key: "url".into() } });
    stack
}

/// The applies when every service but `waiting` has migrated (their Deployments are withheld).
fn applies_but(d: &Desired, waiting: &[Service]) -> Vec<(String, Value)> {
    let withheld: Vec<String> = d
        .migrations
        .iter()
        .filter(|(s, _, _)| waiting.contains(s))
        .map(|(_, _, deployment)| entry(deployment).0)
        .collect();
    let mut expected = expected_applies(d, true);
    expected.retain(|(path, _)| !withheld.contains(path));
    expected
}

/// The cluster: the MySQL claim survived `helm uninstall`, its Secret did not, so MySQL keeps the
/// first install's password and every migration is refused.
#[tokio::test]
async fn wrong_database_password() {
    let stack = minimal_stack();
    let wanted = desired(&stack, &cluster_secrets());
    // Made by this install, 50 s after the claim.
    let mut secret =
        stored(wanted.secrets.iter().find(|s| s.metadata.name.as_deref() == Some("shop-mysql")).unwrap());
    secret["metadata"]["creationTimestamp"] = json!("2025-05-01T10:00:50Z");
    let mut pods = vec![running(workload_pod(&stack, "mysql", "0"), true, 30)];
    let mut logs = Vec::new();
    for service in Service::ALL {
        let pod = crash_looping(migration_pod(&stack, service, "x1"), 1, 1);
        logs.push((
            pod_name(&pod),
            "migrate".to_owned(),
            Ok(access_denied_log(service.name(), "shop-mysql.mall.svc.cluster.local:3306")),
        ));
        pods.push(pod);
    }
    let cluster = Cluster {
        secrets: vec![secret],
        jobs: wanted.migrations.iter().map(|(_, job, _)| stored(job)).collect(),
        sts: wanted.stateful_sets.iter().map(|s| settled(&stored(s))).collect(),
        claims: vec![mysql_claim(&stack, "standard", "Bound")],
        pods,
        logs,
        ..Cluster::default()
    };
    let answer = |b: &Value| if is_job(b) { running_job(b) } else { settled(b) };
    let (status, note) =
        reconcile_broken(stack, cluster, expected_applies(&wanted, false), answer, "MigrationFailed", false)
            .await;
    let cause = "database refused the password for user mall (volume claim data-shop-mysql-0 is older than Secret \
                 shop-mysql: MySQL keeps the password of an earlier install)";
    assert_degraded(
        &status,
        &note,
        "MigrationFailed",
        &format!("auth, user, product, cart, order, payment, checkout: {cause}"),
    );
    assert_eq!(status["components"]["auth"]["reason"], "MigrationFailed");
    assert_eq!(status["components"]["auth"]["message"], cause);
    assert_eq!(condition(&status, "DatabaseReady")["status"], "True");
    assert!(status["components"]["mysql"].get("message").is_none(), "MySQL itself is fine");
}

#[tokio::test]
async fn database_unreachable() {
    let stack = external_database(minimal_stack());
    let wanted = desired(&stack, &cluster_secrets());
    let pod = crash_looping(migration_pod(&stack, Service::Auth, "x1"), 1, 3);
    let cluster = Cluster {
        logs: vec![(pod_name(&pod), "migrate".into(), Ok(connection_refused_log("auth", "db.internal:1")))],
        pods: vec![pod],
        // The other services migrated before.
        jobs: wanted
            .migrations
            .iter()
            .map(|(s, job, _)| if *s == Service::Auth { stored(job) } else { settled(&stored(job)) })
            .collect(),
        ..Cluster::default()
    };
    let answer = |b: &Value| {
        if is_job(b) && name_of(b).contains("-migrate-auth-") { running_job(b) } else { settled(b) }
    };
    let (status, note) = reconcile_broken(
        stack,
        cluster,
        applies_but(&wanted, &[Service::Auth]),
        answer,
        "MigrationFailed",
        false,
    )
    .await;
    assert_degraded(
        &status,
        &note,
        "MigrationFailed",
        "auth: database unreachable at db.internal:1 (connection refused)",
    );
    assert_eq!(condition(&status, "DatabaseReady")["reason"], "External");
}

#[tokio::test]
async fn image_that_cannot_be_pulled() {
    let mut stack = minimal_stack();
    stack.spec.image.repository = "lab.local/mall".into();
    stack.spec.image.tag = "nope".into();
    stack.spec.image.pull_policy = PullPolicy::Never;
    let wanted = desired(&stack, &cluster_secrets());
    let never = |pod| {
        waiting(
            pod,
            "ErrImageNeverPull",
            "Container image \"lab.local/mall:nope\" is not present with pull policy of Never",
        )
    };
    let mut pods: Vec<Value> =
        Service::ALL.into_iter().map(|s| never(migration_pod(&stack, s, "x1"))).collect();
    pods.push(never(workload_pod(&stack, "gateway", "5d8f9c-abcde")));
    pods.push(running(workload_pod(&stack, "mysql", "0"), true, 30));
    let cluster = Cluster {
        jobs: wanted.migrations.iter().map(|(_, job, _)| stored(job)).collect(),
        pods,
        ..Cluster::default()
    };
    let answer = |b: &Value| {
        let mut stored = settled(b);
        if is_job(b) {
            stored = running_job(b);
        } else if is_deployment(b, "shop-gateway") {
            stored["status"]["readyReplicas"] = json!(0);
        }
        stored
    };
    let (status, note) =
        reconcile_broken(stack, cluster, expected_applies(&wanted, false), answer, "ImagePullFailed", false)
            .await;
    assert_degraded(
        &status,
        &note,
        "ImagePullFailed",
        "auth, user, product, cart, order, payment, checkout, gateway: image lab.local/mall:nope cannot be pulled (ErrImageNeverPull)",
    );
    assert_eq!(status["components"]["gateway"]["ready"], 0);
}

/// Every migration done; the user service exits at start (its admin password is too short), and once
/// more when its log cannot be read.
#[tokio::test]
async fn a_service_that_exits_at_start() {
    for (log, message) in [
        (
            Ok("{\"level\":\"INFO\",\"message\":\"cache ready\"}\nError: password must be at least 8 characters\n".to_owned()),
            "user: exits at start (exit code 1): password must be at least 8 characters",
        ),
        (
            Err(403),
            "user: exits at start (exit code 1) (its log cannot be read: pods \"shop-user-7c9d-x2x7k\" is forbidden: User \"system:serviceaccount:mall:mall-operator\" cannot get resource \"pods/log\")",
        ),
    ] {
        let stack = minimal_stack();
        let wanted = desired(&stack, &cluster_secrets());
        let pod = crash_looping(workload_pod(&stack, "user", "7c9d-x2x7k"), 1, 2);
        let refused = log.is_err();
        let cluster = Cluster {
            logs: vec![(pod_name(&pod), "user".into(), log)],
            pods: vec![pod],
            jobs: wanted.migrations.iter().map(|(_, job, _)| settled(&stored(job))).collect(),
            ..Cluster::default()
        };
        let answer = |b: &Value| {
            let mut stored = settled(b);
            if is_deployment(b, "shop-user") {
                stored["status"]["readyReplicas"] = json!(0);
            }
            stored
        };
        let series = format!("{}{{error=\"logs\",reason=\"forbidden\"}}", metrics::FAILURES);
        let before = metrics::value(&series).unwrap_or(0.0);
        let (status, note) =
            reconcile_broken(stack, cluster, expected_applies(&wanted, true), answer, "CrashLoop", true).await;
        assert_degraded(&status, &note, "CrashLoop", message);
        if refused {
            assert!(metrics::value(&series).unwrap() >= before + 1.0, "a refused log read is counted");
        }
    }
}

#[tokio::test]
async fn a_storage_class_that_does_not_exist() {
    let mut stack = minimal_stack();
    stack.spec.database.managed.as_mut().unwrap().storage_class_name = Some("fast-ssd".into());
    let wanted = desired(&stack, &cluster_secrets());
    let mut sts = stored(&wanted.stateful_sets[0]);
    sts["status"] = json!({"replicas": 1, "readyReplicas": 0});
    let claim = mysql_claim(&stack, "fast-ssd", "Pending");
    let cluster = Cluster {
        sts: vec![sts],
        pods: vec![unschedulable(
            workload_pod(&stack, "mysql", "0"),
            "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
        )],
        claims: vec![claim],
        // The PersistentVolume controller's word, and an older one about another claim.
        events: Some(vec![
            warning(
                "PersistentVolumeClaim",
                "data-shop-mysql-0",
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"fast-ssd\" not found",
                80,
            ),
            warning(
                "PersistentVolumeClaim",
                "data-other-0",
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"x\" not found",
                90,
            ),
        ]),
        ..Cluster::default()
    };
    let answer = |b: &Value| {
        if is_job(b) {
            running_job(b)
        } else if b["kind"] == "StatefulSet" {
            let mut stored = b.clone();
            stored["status"] = json!({"replicas": 1, "readyReplicas": 0});
            stored
        } else {
            settled(b)
        }
    };
    // MySQL is not ready, so the migration Jobs are held back.
    let expected: Vec<(String, Value)> =
        expected_applies(&wanted, false).into_iter().filter(|(_, body)| !is_job(body)).collect();
    let (status, note) =
        reconcile_broken(stack, cluster, expected, answer, "VolumeProvisioningFailed", false).await;
    let cause = "volume claim data-shop-mysql-0 cannot be provisioned: storageclass.storage.k8s.io \"fast-ssd\" not found";
    assert_degraded(&status, &note, "VolumeProvisioningFailed", &format!("mysql: {cause}"));
    let database = condition(&status, "DatabaseReady");
    assert_eq!(
        database["message"],
        format!("waiting for the managed MySQL: {cause} (migrations start once it is ready)")
    );
    assert_eq!(status["components"]["auth"]["message"], "migration waits for the database");
}

#[tokio::test]
async fn a_quota_that_forbids_one_more_pod() {
    let mut stack = minimal_stack();
    stack.spec.services.cart.replicas = 2;
    let wanted = desired(&stack, &cluster_secrets());
    let cluster = Cluster {
        jobs: wanted.migrations.iter().map(|(_, job, _)| settled(&stored(job))).collect(),
        pods: vec![running(workload_pod(&stack, "cart", "6d4b8c7f9-aaaaa"), true, 10)],
        ..Cluster::default()
    };
    let answer = |b: &Value| {
        let mut stored = settled(b);
        if is_deployment(b, "shop-cart") {
            stored["status"] = json!({
                "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
                "conditions": [{
                    "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                    "message": "pods \"shop-cart-6d4b8c7f9-x2x7k\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=12, limited: pods=12",
                }],
            });
        }
        stored
    };
    let (status, note) =
        reconcile_broken(stack, cluster, expected_applies(&wanted, true), answer, "QuotaExceeded", true)
            .await;
    assert_degraded(
        &status,
        &note,
        "QuotaExceeded",
        "cart: cannot create a pod: exceeded quota: pods, requested: pods=1, used: pods=12, limited: pods=12",
    );
    assert_eq!(
        (status["components"]["cart"]["ready"].as_i64(), status["components"]["cart"]["desired"].as_i64()),
        (Some(1), Some(2))
    );
}

/// The operator may not list pods (a Role from before this version): it says so, applies the children
/// all the same, counts the refusal and backs off.
#[tokio::test]
async fn a_refused_read_is_reported_and_the_children_still_applied() {
    let stack = minimal_stack();
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    let (client, mut server) = mock_client();
    let refusal = "pods is forbidden: User \"system:serviceaccount:mall:mall-operator\" cannot list resource \"pods\" in API group \"\" in the namespace \"mall\"";
    let script = {
        let stack = stack.clone();
        async move {
            server.list(SECRETS, "Secret", with_identity(vec![])).await;
            server.list(JOBS, "Job", vec![]).await;
            server.list(DEPLOYMENTS, "Deployment", vec![]).await;
            server.list(STATEFULSETS, "StatefulSet", vec![]).await;
            server.list(MONITORS, "ServiceMonitor", vec![]).await;
            let received = server.expect(Method::GET, PODS).await;
            received.respond(
                StatusCode::FORBIDDEN,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": refusal, "reason": "Forbidden", "code": 403}),
            );
            applies(&mut server, &expected, settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let message = format!("cannot read Pod: {refusal}");
            let note = event(&mut server, "Warning", "Forbidden").await["note"].as_str().unwrap().to_owned();
            assert_degraded(&status, &note, "Forbidden", &message);
            assert_eq!(status["readyComponents"], "10/10", "everything else was applied and is ready");
            event(&mut server, "Normal", "Migrated").await;
        }
    };
    let series = format!("{}{{error=\"observe\",reason=\"forbidden\"}}", metrics::FAILURES);
    let before = metrics::value(&series).unwrap_or(0.0);
    let error = run(stack, context(client), script).await.unwrap_err();
    assert_eq!((error.metric_label(), error.refusal()), ("observe", "forbidden"));
    assert!(metrics::value(&series).unwrap() >= before + 1.0, "{}", metrics::render());
}
