use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{Container, EnvVar};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::*;
use crate::crd::ServiceType;
use crate::fixtures::{full_stack, minimal_stack};

fn names<K: Resource>(objects: &[K]) -> Vec<String> {
    objects.iter().map(|o| o.meta().name.clone().unwrap()).collect()
}

pub(super) fn all_metadata(d: &Desired) -> Vec<&ObjectMeta> {
    let mut all: Vec<&ObjectMeta> = Vec::new();
    all.extend(d.secrets.iter().map(|o| &o.metadata));
    all.extend(d.config_maps.iter().map(|o| &o.metadata));
    all.extend(d.services.iter().map(|o| &o.metadata));
    all.extend(d.stateful_sets.iter().map(|o| &o.metadata));
    all.extend(d.deployments.iter().map(|o| &o.metadata));
    all.extend(d.migrations.iter().flat_map(|(_, j, dep)| [&j.metadata, &dep.metadata]));
    all.extend(d.pod_disruption_budgets.iter().map(|o| &o.metadata));
    all.extend(d.autoscalers.iter().map(|o| &o.metadata));
    all.extend(d.network_policies.iter().map(|o| &o.metadata));
    all.extend(d.service_monitors.iter().map(|o| &o.metadata));
    all.extend(d.persistent_volume_claims.iter().map(|o| &o.metadata));
    all.extend(d.cron_jobs.iter().map(|o| &o.metadata));
    all.extend(d.restore.iter().map(|o| &o.metadata));
    all
}

pub(super) fn service_deployment_of(d: &Desired, service: Service) -> &Deployment {
    &d.migrations.iter().find(|(s, _, _)| *s == service).unwrap().2
}

pub(super) fn container(d: &Deployment) -> &Container {
    &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
}

pub(super) fn env_map(c: &Container) -> BTreeMap<String, EnvVar> {
    c.env.clone().unwrap().into_iter().map(|e| (e.name.clone(), e)).collect()
}

fn secret_ref(e: &EnvVar) -> (String, String) {
    let r = e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    (r.name.clone(), r.key.clone())
}

pub(super) fn hash_of(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
        [CONFIG_HASH_ANNOTATION]
        .clone()
}

#[test]
fn minimal_stack_builds_exactly_these_objects() {
    let d = desired(&minimal_stack(), &ExistingSecrets::new());
    assert_eq!(
        names(&d.secrets),
        [
            "shop-mysql",
            "shop-mysql-auth",
            "shop-mysql-user",
            "shop-mysql-product",
            "shop-mysql-cart",
            "shop-mysql-order",
            "shop-mysql-payment",
            "shop-mysql-checkout",
            "shop-redis",
            "shop-admin",
            "shop-identity"
        ]
    );
    assert_eq!(names(&d.config_maps), ["shop-config"]);
    assert_eq!(
        names(&d.services),
        [
            "shop-mysql",
            "shop-redis",
            "shop-auth",
            "shop-user",
            "shop-product",
            "shop-cart",
            "shop-order",
            "shop-payment",
            "shop-checkout",
            "shop-gateway"
        ]
    );
    assert_eq!(names(&d.stateful_sets), ["shop-mysql"]);
    assert_eq!(names(&d.deployments), ["shop-redis", "shop-gateway"]);
    let jobs: Vec<Job> = d.migrations.iter().map(|(_, j, _)| j.clone()).collect();
    let deployments: Vec<Deployment> = d.migrations.iter().map(|(_, _, dep)| dep.clone()).collect();
    assert_eq!(
        names(&deployments),
        [
            "shop-auth",
            "shop-user",
            "shop-product",
            "shop-cart",
            "shop-order",
            "shop-payment",
            "shop-checkout"
        ]
    );
    for (job, service) in names(&jobs).iter().zip(Service::ALL) {
        assert!(job.starts_with(&format!("shop-migrate-{}-", service.name())), "{job}");
        assert!(job.len() <= 63);
    }
    assert!(d.pod_disruption_budgets.is_empty());
    assert!(d.autoscalers.is_empty());
    assert_eq!(
        names(&d.network_policies),
        [
            "shop-gateway",
            "shop-auth",
            "shop-user",
            "shop-product",
            "shop-cart",
            "shop-order",
            "shop-payment",
            "shop-checkout",
            "shop-mysql",
            "shop-redis"
        ],
        "NetworkPolicies are on by default"
    );
}

#[test]
fn every_object_is_labelled_and_owned_by_the_stack() {
    // Unless kept on deletion: see `mysql_volume_and_secret_are_kept_or_deleted_together`.
    let mut minimal = minimal_stack();
    minimal.spec.database.managed.as_mut().unwrap().retain_on_delete = false;
    for stack in [minimal, full_stack()] {
        let d = desired(&stack, &ExistingSecrets::new());
        for meta in all_metadata(&d) {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/name"], "mall");
            assert_eq!(labels["app.kubernetes.io/instance"], "shop");
            assert_eq!(labels["app.kubernetes.io/part-of"], "mall");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "mall-operator");
            assert!(labels.contains_key("app.kubernetes.io/component"));
            assert_eq!(meta.namespace.as_deref(), Some("mall"));
            let owners = meta.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            let owner = &owners[0];
            assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("MallStack", "shop"));
            assert_eq!(owner.api_version, "mall.example.com/v1alpha1");
            assert_eq!(owner.uid, "3f1c9a52-0000-4000-8000-000000000001");
            assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        }
    }
}

#[test]
fn service_deployment_runs_mall_serve_locked_down_with_probes() {
    let d = desired(&minimal_stack(), &ExistingSecrets::new());
    let deployment = service_deployment_of(&d, Service::Order);
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.selector.match_labels.as_ref().unwrap().len(), 3);
    let c = container(deployment);
    assert_eq!(c.image.as_deref(), Some("ghcr.io/example/mall:0.1.0"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(c.command.as_deref(), Some(&["mall".to_owned()][..]));
    assert_eq!(c.args.as_deref(), Some(&["serve".to_owned(), "order".to_owned()][..]));
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port), (Some("grpc"), 50051));
    let readiness = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    let liveness = c.liveness_probe.as_ref().unwrap().grpc.as_ref().unwrap();
    assert_eq!(liveness.port, 50051);

    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let pod = spec.template.spec.as_ref().unwrap();
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.automount_service_account_token, Some(false));

    let env = env_map(c);
    assert_eq!(env["MALL_LISTEN"].value.as_deref(), Some("0.0.0.0:50051"));
    assert_eq!(secret_ref(&env["MALL_ORDER_DATABASE_URL"]), ("shop-mysql-order".into(), "url".into()));
    assert_eq!(secret_ref(&env["MALL_REDIS_URL"]), ("shop-redis".into(), "url".into()));
    assert!(!env.contains_key("MALL_DATABASE_URL") && !env.contains_key("MALL_DATABASE_PASSWORD"));
    assert!(!env.contains_key("MALL_AUTH_SIGNING_KEY") && !env.contains_key("MALL_ADMIN_PASSWORD"));
    assert_eq!(c.env_from.as_ref().unwrap()[0].config_map_ref.as_ref().unwrap().name, "shop-config");

    let user = env_map(container(service_deployment_of(&d, Service::User)));
    assert_eq!(secret_ref(&user["MALL_ADMIN_PASSWORD"]), ("shop-admin".into(), "password".into()));
}

#[test]
fn config_map_lists_every_peer_and_shared_setting() {
    let cm = config_map(&minimal_stack());
    let data = cm.data.unwrap();
    for service in Service::ALL {
        assert_eq!(
            data[&format!("MALL_{}_ADDR", service.name().to_uppercase())],
            format!("http://shop-{}.mall.svc.cluster.local:50051", service.name())
        );
    }
    assert_eq!(data["MALL_TOKEN_TTL"], "24h");
    assert_eq!(data["MALL_LOG_FORMAT"], "json");
    assert_eq!(data["MALL_ADMIN_EMAIL"], "admin@mall.local");
}

#[test]
fn services_are_headless_and_the_gateway_service_has_the_chosen_type() {
    let d = desired(&minimal_stack(), &ExistingSecrets::new());
    let find =
        |name: &str| d.services.iter().find(|s| s.metadata.name.as_deref() == Some(name)).unwrap().clone();
    let auth = find("shop-auth").spec.unwrap();
    assert_eq!(auth.cluster_ip.as_deref(), Some("None"));
    assert_eq!(auth.ports.as_ref().unwrap()[0].port, 50051);
    let gateway = find("shop-gateway").spec.unwrap();
    assert_eq!(gateway.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(gateway.ports.as_ref().unwrap()[0].port, 8889);
    assert_eq!(gateway.ports.as_ref().unwrap()[0].node_port, None);
    assert_eq!(gateway.external_traffic_policy, None);
    let gateway_of = |d: &Desired| {
        d.deployments.iter().find(|x| x.metadata.name.as_deref() == Some("shop-gateway")).unwrap().clone()
    };
    let minimal = desired(&minimal_stack(), &ExistingSecrets::new());
    assert!(!env_map(container(&gateway_of(&minimal))).contains_key("MALL_GATEWAY_TRUSTED_PROXIES"));

    let mut behind_ingress = full_stack();
    behind_ingress.spec.gateway.trusted_proxies = Some(1);
    let gw = gateway_of(&desired(&behind_ingress, &ExistingSecrets::new()));
    assert_eq!(env_map(container(&gw))["MALL_GATEWAY_TRUSTED_PROXIES"].value.as_deref(), Some("1"));

    let full = desired(&full_stack(), &ExistingSecrets::new());
    let gateway = full.services.iter().find(|s| s.metadata.name.as_deref() == Some("shop-gateway")).unwrap();
    let spec = gateway.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(30889));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"), "client addresses reach the gateway");
    let gw = container(&full.deployments[0]);
    assert_eq!(gw.args.as_deref(), Some(&["serve".to_owned(), "gateway".to_owned()][..]));
    assert_eq!(env_map(gw)["MALL_GATEWAY_LISTEN"].value.as_deref(), Some("0.0.0.0:8889"));
}

#[test]
fn managed_mysql_and_redis() {
    let d = desired(&minimal_stack(), &ExistingSecrets::new());
    let sts = d.stateful_sets[0].spec.as_ref().unwrap();
    assert_eq!(sts.service_name.as_deref(), Some("shop-mysql"));
    let claim = &sts.volume_claim_templates.as_ref().unwrap()[0];
    let storage =
        &claim.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"];
    assert_eq!(storage.0, "10Gi");
    let mysql = &sts.template.spec.as_ref().unwrap().containers[0];
    // Root only: the services' databases and users are made by `mall provision` in the migration Jobs.
    let env: BTreeMap<_, _> = mysql.env.clone().unwrap().into_iter().map(|e| (e.name.clone(), e)).collect();
    assert_eq!(env.keys().collect::<Vec<_>>(), ["MYSQL_ROOT_PASSWORD"]);
    assert_eq!(secret_ref(&env["MYSQL_ROOT_PASSWORD"]), ("shop-mysql".into(), "root-password".into()));
    assert!(mysql.volume_mounts.as_ref().unwrap().iter().all(|m| !m.mount_path.contains("initdb")));
    let mysql_svc = d.services.iter().find(|s| s.metadata.name.as_deref() == Some("shop-mysql")).unwrap();
    assert_eq!(mysql_svc.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
    let redis = container(&d.deployments[0]);
    assert_eq!(redis.image.as_deref(), Some("redis:7.4-alpine"));
    // Seven services, one pod each and one more in a rollout, ten connections each, and 20 spare.
    assert_eq!(mysql.args.as_deref(), Some(&["--max-connections=160".to_owned()][..]));
}

/// The managed server accepts every pod an autoscaler may run, with a full pool each.
#[test]
fn managed_mysql_fits_the_most_pods_the_stack_may_run() {
    let mut stack = minimal_stack();
    stack.spec.services.order.replicas = 4;
    stack.spec.services.checkout.autoscaling = Some(crate::crd::AutoscalingSpec {
        min_replicas: 2,
        max_replicas: 12,
        target_cpu_utilization_percentage: 70,
    });
    // Five services at 1 + 1 pods, order at 4 + 1, checkout at 12 + 3.
    let expected = (5 * 2 + 5 + 15) * SERVICE_POOL_SIZE + 20;
    assert_eq!(mysql_max_connections(&stack), expected);
    let d = desired(&stack, &ExistingSecrets::new());
    let mysql = &d.stateful_sets[0].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(mysql.args.as_deref(), Some(&[format!("--max-connections={expected}")][..]));
    assert!(expected > 151, "more than MySQL's default would allow");
}

/// The data of Secret `name` among `secrets`, as text.
fn secret_text(secrets: &[k8s_openapi::api::core::v1::Secret], name: &str, key: &str) -> String {
    let secret = secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name)).unwrap();
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// `d` as the JSON the API server would get: every Deployment, StatefulSet, Job and ConfigMap.
fn workloads_json(d: &Desired) -> String {
    let mut all = serde_json::to_string(&d.deployments).unwrap();
    all += &serde_json::to_string(&d.stateful_sets).unwrap();
    all += &serde_json::to_string(&d.config_maps).unwrap();
    for (_, job, deployment) in &d.migrations {
        all += &serde_json::to_string(job).unwrap();
        all += &serde_json::to_string(deployment).unwrap();
    }
    all
}

#[test]
fn managed_redis_requires_the_generated_password_given_through_its_secret() {
    let stack = minimal_stack();
    let d = desired(&stack, &ExistingSecrets::new());
    let password = secret_text(&d.secrets, "shop-redis", PASSWORD_KEY);
    assert_eq!(password.len(), 32);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        secret_text(&d.secrets, "shop-redis", URL_KEY),
        format!("redis://:{password}@shop-redis.mall.svc.cluster.local:6379")
    );

    let redis =
        container(d.deployments.iter().find(|x| x.metadata.name.as_deref() == Some("shop-redis")).unwrap());
    let args = redis.args.clone().unwrap();
    let at = args.iter().position(|a| a == "--requirepass").expect("--requirepass");
    assert_eq!(args[at + 1], "$(REDIS_PASSWORD)", "expanded by the kubelet from the Secret");
    let env = env_map(redis);
    assert_eq!(secret_ref(&env["REDIS_PASSWORD"]), ("shop-redis".into(), "password".into()));
    assert!(env.values().all(|e| e.value.is_none()), "no literal value in the Redis environment");
    // Ready only when a client that authenticates gets PONG; the password comes from the environment.
    let readiness = redis.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.clone().unwrap();
    let script = readiness.last().unwrap();
    assert!(script.contains(r#"REDISCLI_AUTH="$REDIS_PASSWORD""#) && script.contains("ping"), "{script}");
    assert!(script.contains("PONG"), "{script}");
    assert!(redis.liveness_probe.as_ref().unwrap().tcp_socket.is_some(), "alive while it takes connections");

    // The password itself is in no pod spec, ConfigMap or Job.
    assert!(!workloads_json(&d).contains(&password));
}

/// A `redis-server` this test started, killed (by its PID, through the handle) when dropped.
struct RedisServer(std::process::Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_redis_readiness_probe_passes_with_the_password_and_fails_without() {
    use std::process::{Command, Stdio};
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let password = "probe-password-0123456789";
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--requirepass", password])
        .args(["--save", "", "--appendonly", "no", "--dir", std::env::temp_dir().to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn();
    let server = match spawned {
        Ok(child) => RedisServer(child),
        Err(e) if !ci => {
            return eprintln!("note: skipping the Redis probe test: cannot run redis-server: {e}");
        }
        Err(e) => panic!("CI=true and redis-server cannot run: {e}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let d = desired(&minimal_stack(), &ExistingSecrets::new());
    let redis =
        container(d.deployments.iter().find(|x| x.metadata.name.as_deref() == Some("shop-redis")).unwrap());
    let command = redis.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.clone().unwrap();
    // The probe as the kubelet runs it in the pod, against this test's server instead of port 6379.
    let script = command.last().unwrap().replace("-p 6379", &format!("-p {port}"));
    let probe = |password: Option<&str>| {
        let mut run = Command::new(&command[0]);
        run.args(&command[1..command.len() - 1])
            .arg(&script)
            .env_remove("REDIS_PASSWORD")
            .env_remove("REDISCLI_AUTH");
        if let Some(p) = password {
            run.env("REDIS_PASSWORD", p);
        }
        run.stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success()
    };
    assert!(probe(Some(password)), "ready with the password of the Secret");
    assert!(!probe(Some("not-the-password")), "not ready with another password");
    assert!(!probe(None), "not ready without a password");
    drop(server);
    assert!(!probe(Some(password)), "not ready once Redis is gone");
}

#[test]
fn every_component_reads_the_redis_url_from_the_secret() {
    let d = desired(&minimal_stack(), &ExistingSecrets::new());
    let gateway = d.deployments.iter().find(|x| x.metadata.name.as_deref() == Some("shop-gateway")).unwrap();
    let components: Vec<&Deployment> =
        std::iter::once(gateway).chain(d.migrations.iter().map(|(_, _, dep)| dep)).collect();
    assert_eq!(components.len(), 8);
    for deployment in components {
        let env = env_map(container(deployment));
        let name = deployment.metadata.name.as_deref().unwrap();
        let url = &env["MALL_REDIS_URL"];
        assert_eq!(url.value, None, "{name}: no plain value");
        assert_eq!(secret_ref(url), ("shop-redis".into(), "url".into()), "{name}");
    }
    // External Redis stays as given.
    let full = desired(&full_stack(), &ExistingSecrets::new());
    assert!(!names(&full.secrets).contains(&"shop-redis".to_owned()));
    let gateway = container(&full.deployments[0]);
    assert_eq!(secret_ref(&env_map(gateway)["MALL_REDIS_URL"]), ("mall-redis".into(), "url".into()));
}

#[test]
fn each_service_connects_as_its_own_user_and_only_provision_gets_root() {
    let stack = minimal_stack();
    let d = desired(&stack, &ExistingSecrets::new());
    let root = secret_text(&d.secrets, "shop-mysql", DB_ROOT_PASSWORD_KEY);
    let mut passwords = std::collections::BTreeSet::new();
    for (service, job, deployment) in &d.migrations {
        let name = service.name();
        let secret = format!("shop-mysql-{name}");
        let password = secret_text(&d.secrets, &secret, PASSWORD_KEY);
        assert!(passwords.insert(password.clone()), "{name} has a password of its own");
        assert_eq!(
            secret_text(&d.secrets, &secret, URL_KEY),
            format!("mysql://mall_{name}:{password}@shop-mysql.mall.svc.cluster.local:3306/mall_{name}")
        );
        let url_var = format!("MALL_{}_DATABASE_URL", name.to_uppercase());
        let own_url = |c: &Container| secret_ref(&env_map(c)[&url_var]);

        // The service and its migration connect with its own URL, and know of no other credential.
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let migrate = &pod.containers[0];
        for c in [container(deployment), migrate] {
            assert_eq!(own_url(c), (secret.clone(), "url".into()), "{name}/{}", c.name);
            for e in c.env.iter().flatten() {
                let from = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref());
                assert!(
                    from.is_none_or(|r| r.name != "shop-mysql"),
                    "{name}/{}: {} from shop-mysql",
                    c.name,
                    e.name
                );
                assert!(
                    !e.value.as_deref().unwrap_or_default().contains("mysql://"),
                    "{name}/{}: {}",
                    c.name,
                    e.name
                );
            }
            assert!(c.env_from.iter().flatten().all(|f| f.secret_ref.is_none()), "{name}/{}", c.name);
        }

        // First, `mall provision <service>` as root makes that user and database.
        let init = pod.init_containers.as_ref().expect("an init container");
        assert_eq!(init.len(), 1);
        let provision = &init[0];
        assert_eq!(provision.args.as_deref(), Some(&["provision".to_owned(), name.to_owned()][..]));
        assert_eq!(provision.image, migrate.image);
        let env = env_map(provision);
        assert_eq!(
            secret_ref(&env["MALL_DATABASE_ROOT_PASSWORD"]),
            ("shop-mysql".into(), DB_ROOT_PASSWORD_KEY.into())
        );
        assert_eq!(
            env["MALL_DATABASE_ADMIN_URL"].value.as_deref(),
            Some("mysql://root:$(MALL_DATABASE_ROOT_PASSWORD)@shop-mysql.mall.svc.cluster.local:3306")
        );
        let order: Vec<&str> = provision.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let at = |n: &str| order.iter().position(|x| *x == n).unwrap();
        assert!(
            at("MALL_DATABASE_ROOT_PASSWORD") < at("MALL_DATABASE_ADMIN_URL"),
            "defined before it expands"
        );
        assert_eq!(own_url(provision), (secret.clone(), "url".into()), "it provisions the URL's account");
    }
    // No generated password is written into any pod spec, ConfigMap or Job.
    let all = workloads_json(&d);
    assert!(!all.contains(&root));
    assert!(passwords.iter().all(|p| !all.contains(p)));

    // An external database: the user's URL as given, nothing to provision.
    let full = desired(&full_stack(), &ExistingSecrets::new());
    for (service, job, _) in &full.migrations {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(pod.init_containers.is_none(), "{}", service.name());
        assert_eq!(
            secret_ref(&env_map(&pod.containers[0])["MALL_DATABASE_URL"]),
            ("mall-db".into(), "url".into())
        );
    }
}

#[test]
fn external_database_redis_and_admin_come_from_the_given_secrets() {
    let d = desired(&full_stack(), &ExistingSecrets::new());
    assert_eq!(names(&d.secrets), ["shop-identity"]);
    assert!(d.stateful_sets.is_empty());
    assert_eq!(names(&d.deployments), ["shop-gateway"]);
    assert_eq!(names(&d.config_maps), ["shop-config"]);
    let cart = env_map(container(service_deployment_of(&d, Service::Cart)));
    assert_eq!(secret_ref(&cart["MALL_DATABASE_URL"]), ("mall-db".into(), "url".into()));
    assert_eq!(secret_ref(&cart["MALL_REDIS_URL"]), ("mall-redis".into(), "url".into()));
    assert!(!cart.contains_key("MALL_CART_DATABASE_URL"));
    let user = env_map(container(service_deployment_of(&d, Service::User)));
    assert_eq!(secret_ref(&user["MALL_ADMIN_PASSWORD"]), ("mall-admin".into(), "password".into()));
    let c = container(service_deployment_of(&d, Service::Cart));
    assert_eq!(c.image.as_deref(), Some("registry.example.com/mall:1.2.3"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let pod = service_deployment_of(&d, Service::Cart).spec.as_ref().unwrap().template.spec.clone().unwrap();
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry-creds");
}

#[test]
fn replicas_autoscaling_and_disruption_budgets_interplay() {
    let d = desired(&full_stack(), &ExistingSecrets::new());
    let replicas = |s: Service| service_deployment_of(&d, s).spec.as_ref().unwrap().replicas;
    assert_eq!(replicas(Service::Product), None, "the HPA owns the replica count");
    assert_eq!(replicas(Service::Order), Some(2));
    assert_eq!(replicas(Service::Payment), Some(0));
    assert_eq!(replicas(Service::Auth), Some(1));
    assert_eq!(d.deployments[0].spec.as_ref().unwrap().replicas, Some(3));

    assert_eq!(names(&d.autoscalers), ["shop-product"]);
    let hpa = d.autoscalers[0].spec.as_ref().unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 10));
    assert_eq!(hpa.scale_target_ref.name, "shop-product");
    assert_eq!(hpa.scale_target_ref.kind, "Deployment");
    let metric = hpa.metrics.as_ref().unwrap()[0].resource.as_ref().unwrap();
    assert_eq!((metric.name.as_str(), metric.target.average_utilization), ("cpu", Some(70)));

    assert_eq!(names(&d.pod_disruption_budgets), ["shop-gateway", "shop-product", "shop-order"]);
    let pdb = d.pod_disruption_budgets[2].spec.as_ref().unwrap();
    assert_eq!(
        pdb.selector.as_ref().unwrap().match_labels.as_ref().unwrap()["app.kubernetes.io/component"],
        "order"
    );
}

/// The peers a policy admits (`None`: anyone) and the one port it opens, checking that the policy
/// selects exactly its component's pods and that every peer is a pod of this stack.
pub(super) fn admitted(d: &Desired, name: &str) -> (Option<std::collections::BTreeSet<String>>, i32) {
    let np = d.network_policies.iter().find(|p| p.metadata.name.as_deref() == Some(name)).unwrap();
    let spec = np.spec.as_ref().unwrap();
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]), "{name}");
    let component = name.strip_prefix("shop-").unwrap();
    let selected = spec.pod_selector.as_ref().unwrap().match_labels.clone().unwrap();
    assert_eq!(selected["app.kubernetes.io/component"], component, "{name}");
    assert_eq!(selected["app.kubernetes.io/instance"], "shop", "{name}");
    let rules = spec.ingress.as_ref().unwrap();
    assert_eq!(rules.len(), 1, "{name}");
    let ports = rules[0].ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1, "{name}");
    let port = match ports[0].port.as_ref().unwrap() {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p,
        other => panic!("{name}: port {other:?}"),
    };
    let peers = rules[0].from.as_ref().map(|from| {
        assert_eq!(from.len(), 1, "{name}");
        assert!(
            from[0].namespace_selector.is_none() && from[0].ip_block.is_none(),
            "{name}: this namespace only"
        );
        let selector = from[0].pod_selector.as_ref().unwrap();
        assert_eq!(selector.match_labels.as_ref().unwrap()["app.kubernetes.io/instance"], "shop");
        let expression = &selector.match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (expression.key.as_str(), expression.operator.as_str()),
            ("app.kubernetes.io/component", "In")
        );
        expression.values.clone().unwrap().into_iter().collect()
    });
    (peers, port)
}

pub(super) fn set_of(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn network_policies_are_on_by_default_and_admit_exactly_the_callers() {
    // A manifest that does not mention them gets them.
    let stack: MallStack = serde_json::from_value(serde_json::json!({
        "apiVersion": "mall.example.com/v1alpha1",
        "kind": "MallStack",
        "metadata": {"name": "shop", "namespace": "mall", "uid": "3f1c9a52-0000-4000-8000-000000000001"},
        "spec": {"image": {"tag": "0.1.0"}, "database": {"managed": {}}, "redis": {"managed": {}}},
    }))
    .unwrap();
    let d = desired(&stack, &ExistingSecrets::new());
    assert_eq!(d.network_policies.len(), 10);

    // Who calls whom: the gateway calls every service; checkout calls cart, product, order and
    // payment; cart and order call product; payment calls order.
    let services = ["auth", "user", "product", "cart", "order", "payment", "checkout"];
    let calls: [(&str, &[&str]); 5] = [
        ("gateway", &services),
        ("checkout", &["cart", "product", "order", "payment"]),
        ("cart", &["product"]),
        ("order", &["product"]),
        ("payment", &["order"]),
    ];
    assert_eq!(admitted(&d, "shop-gateway"), (None, 8889), "the gateway is open to everyone");
    for service in services {
        let callers: Vec<&str> = calls
            .iter()
            .filter(|(_, callees)| callees.contains(&service))
            .map(|(caller, _)| *caller)
            .collect();
        assert_eq!(admitted(&d, &format!("shop-{service}")), (Some(set_of(&callers)), 50051), "{service}");
    }
    // The data stores: only this stack's pods that use them.
    let mut mysql_clients = services.to_vec();
    mysql_clients.push("migrate");
    mysql_clients.push("backup");
    mysql_clients.push("restore");
    assert_eq!(admitted(&d, "shop-mysql"), (Some(set_of(&mysql_clients)), 3306));
    let mut redis_clients = services.to_vec();
    redis_clients.push("gateway");
    assert_eq!(admitted(&d, "shop-redis"), (Some(set_of(&redis_clients)), 6379));

    // External data stores get no policy; `networkPolicies: false` turns them all off.
    let full = desired(&full_stack(), &ExistingSecrets::new());
    assert_eq!(full.network_policies.len(), 8);
    let mut off = stack.clone();
    off.spec.network_policies = false;
    assert!(desired(&off, &ExistingSecrets::new()).network_policies.is_empty());
}

#[test]
fn config_hash_follows_configuration_only() {
    let base = minimal_stack();
    // The identity keys the cluster holds (without them each build would make new ones).
    let existing = existing_of(&desired(&base, &ExistingSecrets::new()).secrets);
    let hash = |stack: &MallStack, s: Service| hash_of(service_deployment_of(&desired(stack, &existing), s));
    let before = hash(&base, Service::Cart);
    assert_eq!(before.len(), 16);
    assert_eq!(before, hash(&base, Service::Cart), "deterministic");

    let mut annotated = base.clone();
    annotated.metadata.annotations = Some(BTreeMap::from([("team".to_owned(), "shop".to_owned())]));
    annotated.metadata.labels = Some(BTreeMap::from([("env".to_owned(), "prod".to_owned())]));
    annotated.metadata.generation = Some(7);
    assert_eq!(hash(&annotated, Service::Cart), before, "unrelated metadata does not roll pods");
    let mut rescaled = base.clone();
    rescaled.spec.services.cart.replicas = 4;
    assert_eq!(hash(&rescaled, Service::Cart), before, "scaling does not roll pods");

    let mut ttl = base.clone();
    ttl.spec.token_ttl = "1h".into();
    assert_ne!(hash(&ttl, Service::Cart), before, "shared configuration rolls pods");
    let mut image = base.clone();
    image.spec.image.tag = "0.2.0".into();
    assert_ne!(hash(&image, Service::Cart), before, "a new image rolls pods");
    let mut email = base.clone();
    email.spec.admin.email = "boss@shop.example".into();
    assert_ne!(hash(&email, Service::Cart), before);
    let mut db = full_stack();
    db.spec.image = base.spec.image.clone();
    assert_ne!(hash(&db, Service::Cart), before, "a different database rolls pods");

    let d = desired(&base, &existing);
    let deployment = service_deployment_of(&d, Service::Cart);
    assert_eq!(deployment.metadata.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION], before);
}

/// The data of `secrets` as the reconciler reads it back from the cluster.
pub(super) fn existing_of(secrets: &[Secret]) -> ExistingSecrets {
    secrets.iter().map(|s| (s.metadata.name.clone().unwrap(), s.data.clone().unwrap())).collect()
}

#[test]
fn generated_secrets_are_created_once_and_kept() {
    let stack = minimal_stack();
    let first = generated_secrets(&stack, &ExistingSecrets::new());
    let data = |secrets: &[k8s_openapi::api::core::v1::Secret], name: &str, key: &str| -> Vec<u8> {
        secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name)).unwrap().data.as_ref().unwrap()[key]
            .0
            .clone()
    };
    // Auth's single signing key is no longer made: its keys are a file of their own (`auth_keys`).
    assert_eq!(
        names(&first),
        [
            "shop-mysql",
            "shop-mysql-auth",
            "shop-mysql-user",
            "shop-mysql-product",
            "shop-mysql-cart",
            "shop-mysql-order",
            "shop-mysql-payment",
            "shop-mysql-checkout",
            "shop-redis",
            "shop-admin"
        ]
    );
    let db = data(&first, "shop-mysql", DB_PASSWORD_KEY);
    let root = data(&first, "shop-mysql", DB_ROOT_PASSWORD_KEY);
    assert_eq!(db.len(), 32);
    assert_ne!(db, root);

    // A second build without the cluster's data would generate new values...
    let fresh = generated_secrets(&stack, &ExistingSecrets::new());
    assert_ne!(data(&fresh, "shop-mysql", DB_PASSWORD_KEY), db);
    // ...so the reconciler passes what exists, and every value is kept.
    let existing: ExistingSecrets =
        first.iter().map(|s| (s.metadata.name.clone().unwrap(), s.data.clone().unwrap())).collect();
    let again = generated_secrets(&stack, &existing);
    assert_eq!(again, first);

    // The generated service and Redis passwords are kept too, and the URLs follow them.
    for name in ["shop-mysql-cart", "shop-redis"] {
        let password = secret_text(&first, name, PASSWORD_KEY);
        assert_eq!(secret_text(&again, name, PASSWORD_KEY), password);
        assert!(secret_text(&again, name, URL_KEY).contains(&format!(":{password}@")), "{name}");
        assert_ne!(secret_text(&fresh, name, PASSWORD_KEY), password);
    }
    // A password edited by hand is kept, and escaped in the URL.
    let mut edited = existing.clone();
    edited
        .get_mut("shop-mysql-cart")
        .unwrap()
        .insert(PASSWORD_KEY.into(), ByteString(b"p@ss/w:rd#1".to_vec()));
    let edited = generated_secrets(&stack, &edited);
    assert_eq!(secret_text(&edited, "shop-mysql-cart", PASSWORD_KEY), "p@ss/w:rd#1");
    assert_eq!(
        secret_text(&edited, "shop-mysql-cart", URL_KEY),
        "mysql://mall_cart:p%40ss%2Fw%3Ard%231@shop-mysql.mall.svc.cluster.local:3306/mall_cart"
    );

    // A key missing from an existing Secret is filled in; the others stay.
    let mut partial = existing.clone();
    partial.get_mut("shop-mysql").unwrap().remove(DB_ROOT_PASSWORD_KEY);
    let filled = generated_secrets(&stack, &partial);
    assert_eq!(data(&filled, "shop-mysql", DB_PASSWORD_KEY), db);
    assert_eq!(data(&filled, "shop-mysql", DB_ROOT_PASSWORD_KEY).len(), 32);
    assert_ne!(data(&filled, "shop-mysql", DB_ROOT_PASSWORD_KEY), root);
}

#[test]
fn migration_jobs_follow_the_image_and_gate_the_rollout() {
    let stack = minimal_stack();
    let job = migration_job(&stack, Service::Product);
    let c = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.args.as_deref(), Some(&["migrate".to_owned(), "product".to_owned()][..]));
    assert!(env_map(c).contains_key("MALL_PRODUCT_DATABASE_URL"));
    assert_eq!(
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().restart_policy.as_deref(),
        Some("OnFailure")
    );
    let mut next = stack.clone();
    next.spec.image.tag = "0.2.0".into();
    assert_ne!(migration_job_name(&next, Service::Product), migration_job_name(&stack, Service::Product));
    let mut rescaled = stack.clone();
    rescaled.spec.services.product.replicas = 3;
    assert_eq!(migration_job_name(&rescaled, Service::Product), migration_job_name(&stack, Service::Product));
    // A Job's pods cannot change once it exists: any change to them is a new Job.
    let mut pull = stack.clone();
    pull.spec.image.pull_secrets = vec!["registry-creds".into()];
    assert_ne!(migration_job_name(&pull, Service::Product), migration_job_name(&stack, Service::Product));
    assert_eq!(job.metadata.name.as_deref(), Some(migration_job_name(&stack, Service::Product).as_str()));

    let with_status = |status: JobStatus| Job { status: Some(status), ..job.clone() };
    let complete = with_status(JobStatus {
        succeeded: Some(1),
        conditions: Some(vec![JobCondition {
            type_: "Complete".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let failed = with_status(JobStatus {
        failed: Some(7),
        conditions: Some(vec![JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let running = with_status(JobStatus { active: Some(1), ..Default::default() });
    assert_eq!(MigrationState::of(None), MigrationState::Missing);
    assert_eq!(MigrationState::of(Some(&running)), MigrationState::Running);
    assert_eq!(MigrationState::of(Some(&complete)), MigrationState::Succeeded);
    assert_eq!(MigrationState::of(Some(&failed)), MigrationState::Failed);

    let old = desired(&stack, &ExistingSecrets::new());
    let new = desired(&next, &ExistingSecrets::new());
    let old_deploy = service_deployment_of(&old, Service::Product);
    let new_deploy = service_deployment_of(&new, Service::Product);
    // First install: nothing runs until the migration succeeded.
    assert!(!rollout_allowed(MigrationState::Running, None, new_deploy));
    assert!(rollout_allowed(MigrationState::Succeeded, None, new_deploy));
    // Upgrade: the old Deployment stays until the new image's migration succeeded.
    assert!(!rollout_allowed(MigrationState::Missing, Some(old_deploy), new_deploy));
    assert!(!rollout_allowed(MigrationState::Failed, Some(old_deploy), new_deploy));
    assert!(rollout_allowed(MigrationState::Succeeded, Some(old_deploy), new_deploy));
    // Same image (a scale change): no need to wait.
    assert!(rollout_allowed(MigrationState::Missing, Some(old_deploy), old_deploy));
    let mut rescaled = stack.clone();
    rescaled.spec.services.product.replicas = 3;
    let rescaled = desired(&rescaled, &ExistingSecrets::new());
    assert!(rollout_allowed(
        MigrationState::Missing,
        Some(old_deploy),
        service_deployment_of(&rescaled, Service::Product)
    ));
    // A Deployment that does not say which Job it waited for (an earlier operator's) waits for this one:
    // its database user may not exist yet.
    let mut unmarked = old_deploy.clone();
    unmarked.metadata.annotations.as_mut().unwrap().remove(MIGRATION_ANNOTATION);
    assert!(!rollout_allowed(MigrationState::Running, Some(&unmarked), old_deploy));
    assert_eq!(
        old_deploy.metadata.annotations.as_ref().unwrap()[MIGRATION_ANNOTATION],
        migration_job_name(&stack, Service::Product)
    );
}

#[test]
fn node_port_only_with_node_port_type() {
    let mut stack = full_stack();
    stack.spec.gateway.service_type = ServiceType::LoadBalancer;
    let d = desired(&stack, &ExistingSecrets::new());
    let gateway = d.services.iter().find(|s| s.metadata.name.as_deref() == Some("shop-gateway")).unwrap();
    assert_eq!(gateway.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port, None);
    assert_eq!(gateway.spec.as_ref().unwrap().type_.as_deref(), Some("LoadBalancer"));
}

#[test]
fn mysql_volume_and_secret_are_kept_or_deleted_together() {
    let mut stack = minimal_stack();
    for retain in [true, false] {
        stack.spec.database.managed.as_mut().unwrap().retain_on_delete = retain;
        let d = desired(&stack, &ExistingSecrets::new());
        let policy =
            d.stateful_sets[0].spec.as_ref().unwrap().persistent_volume_claim_retention_policy.clone();
        let policy = policy.unwrap();
        let expected = if retain { "Retain" } else { "Delete" };
        assert_eq!(policy.when_deleted.as_deref(), Some(expected), "retainOnDelete: {retain}");
        assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
        for secret in &d.secrets {
            let name = secret.metadata.name.as_deref().unwrap();
            let owned = secret.metadata.owner_references.as_ref().is_some_and(|o| o.len() == 1);
            // The MySQL passwords (root and the services' users) stay with the volume; the signing key,
            // the admin and the Redis passwords go with the stack either way.
            let kept = retain && (name == "shop-mysql" || name.starts_with("shop-mysql-"));
            assert_eq!(owned, !kept, "{name}, retainOnDelete: {retain}");
            // Found again by its labels when the stack is created anew.
            assert_eq!(secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/instance"], "shop");
        }
    }

    // A stack created again with the same name: the kept Secret's passwords are used, not new ones.
    let first = generated_secrets(&minimal_stack(), &ExistingSecrets::new());
    let kept: ExistingSecrets = first
        .iter()
        .filter(|s| s.metadata.name.as_deref().is_some_and(|n| n.starts_with("shop-mysql")))
        .map(|s| (s.metadata.name.clone().unwrap(), s.data.clone().unwrap()))
        .collect();
    assert_eq!(kept.len(), 8);
    let mut again = minimal_stack();
    again.metadata.uid = Some("3f1c9a52-0000-4000-8000-000000000002".into());
    let recreated = generated_secrets(&again, &kept);
    for name in kept.keys() {
        let data = |secrets: &[k8s_openapi::api::core::v1::Secret]| {
            secrets.iter().find(|s| s.metadata.name.as_ref() == Some(name)).unwrap().data.clone()
        };
        assert_eq!(data(&recreated), data(&first), "{name}");
    }
}

#[test]
fn serving_pods_drain_within_their_grace_period() {
    let d = desired(&full_stack(), &ExistingSecrets::new());
    let gateway = &d.deployments[0];
    let serving: Vec<&Deployment> =
        std::iter::once(gateway).chain(d.migrations.iter().map(|(_, _, dep)| dep)).collect();
    assert_eq!(serving.len(), 8);
    for deployment in serving {
        let name = deployment.metadata.name.as_deref().unwrap();
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let grace = pod.termination_grace_period_seconds.unwrap();
        let c = container(deployment);
        let env = env_map(c);
        let seconds = |name: &str| -> i64 {
            env[name].value.as_deref().unwrap().strip_suffix('s').unwrap().parse().unwrap()
        };
        let (drain, request) = (seconds("MALL_DRAIN_DELAY"), seconds("MALL_REQUEST_TIMEOUT"));
        assert_eq!((drain, request), (10, 10), "{name}");
        assert!(
            grace > drain + request,
            "{name}: {grace} s to drain {drain} s and finish a {request} s call"
        );
        assert_eq!(grace, 30, "{name}");
        // SIGTERM goes to the application at once: it drains by itself.
        assert!(c.lifecycle.is_none(), "{name}: no preStop hook");

        let readiness = c.readiness_probe.as_ref().unwrap();
        let (period, failures) = (readiness.period_seconds.unwrap(), readiness.failure_threshold.unwrap());
        assert_eq!((period, failures), (2, 2), "{name}");
        assert!(i64::from(period * failures) < drain, "{name}: out of the endpoints before the drain ends");
        assert!(readiness.timeout_seconds.unwrap() <= period, "{name}");
    }
    // A migration Job does not serve: no drain settings.
    let job = &d.migrations[0].1;
    let migrate = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert!(!env_map(migrate).contains_key("MALL_DRAIN_DELAY"));
}
