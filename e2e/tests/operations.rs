//! Operations on a real cluster (settings in `mall_e2e::cluster`): no client sees a failure through
//! rollouts, lost pods, restarts and rollbacks.
//!
//! One stack with the managed MySQL and Redis and two replicas of the gateway and of every service,
//! reached through its gateway's NodePort (a `kubectl port-forward` pins one gateway pod and would break
//! when that pod goes):
//! 1. First install: the time from apply to Ready is printed (the target is 30 s; the test allows
//!    `MALL_E2E_INSTALL_LIMIT`, default 120 s), and every migration Job got through on its first try (no
//!    failed pod, no restarted container, no `MigrationRetry`).
//! 2. A steady load of six clients through the gateway (`mall_e2e::load`: product reads, `/user/me`,
//!    cart writes) runs through each phase, from a few seconds before its disruption until the stack has
//!    settled again and a few seconds more; every phase must end with no failed request:
//!    - steady: no disruption;
//!    - rollout: `spec.image.tag` to `MALL_E2E_IMAGE_TAG_NEXT` (skipped when that is unset), then
//!    - rollback: the tag back; migrations again succeed first time and the data is intact;
//!    - lost pods: one pod of every component (not MySQL or Redis) deleted at once;
//!    - gateway restart: what `kubectl rollout restart` does, through the API.
//!
//! After each phase a user registered before the first one logs in again and finds their order, their
//! cart and the product they bought. Every phase runs to its end even when an earlier one saw failures;
//! the test then fails listing all of them, after a table of requests, failures and latencies.
//!
//! Without `KUBECONFIG` and `MALL_E2E_IMAGE` it says why and passes (unless `MALL_E2E_REQUIRE=1`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch};
use mall_e2e::cluster::{Cluster, suffix};
use mall_e2e::gateway::Gateway;
use mall_e2e::load::{Load, Plan, Report};
use mall_e2e::run::{COMPONENTS, Run, STACK, Settled, components, is_ready, manager, selector};
use mall_e2e::skip;
use mall_operator::status::{DATABASE_READY, MIGRATIONS_COMPLETE};
use serde_json::{Value, json};

/// Concurrent load clients, each its own user.
const CLIENTS: usize = 6;
/// Replicas of the gateway and of every service.
const REPLICAS: i32 = 2;
/// How long the load runs before a disruption, and after the stack settled again.
const LEAD: Duration = Duration::from_secs(3);
const TAIL: Duration = Duration::from_secs(5);
/// The phase without a disruption.
const STEADY: Duration = Duration::from_secs(15);
/// One request's limit in the load.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "correct horse battery";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_client_sees_a_failure_through_rollouts_lost_pods_and_rollbacks() {
    let Some(cluster) = Cluster::for_test("operations end-to-end test").await else { return };
    let mut run = Run::new(&cluster, "mall-ops");
    let mut book = Book::default();
    let result = steps(&mut run, &mut book).await;
    book.summary();
    run.finish(result.and_then(|()| book.verdict())).await;
}

/// What the phases found: their load reports, and everything that should not have happened.
#[derive(Default)]
struct Book {
    phases: Vec<Phase>,
    findings: Vec<String>,
    /// Migration problems already reported (events and pods outlive the phase that saw them).
    migration_problems: BTreeSet<String>,
    first_install: Option<Duration>,
}

struct Phase {
    name: String,
    report: Report,
    /// From the disruption to a settled stack.
    settled_after: Option<Duration>,
}

impl Book {
    fn find(&mut self, finding: String) {
        eprintln!("e2e: FINDING: {finding}");
        self.findings.push(finding);
    }

    /// Records the migration problems not reported before.
    async fn migrations(&mut self, run: &Run<'_>, phase: &str) -> Result<()> {
        let report = run.migration_report().await?;
        for job in &report.jobs {
            eprintln!("e2e:   migration {job}");
        }
        for problem in report.problems {
            if self.migration_problems.insert(problem.clone()) {
                self.find(format!("{phase}: migration: {problem}"));
            }
        }
        Ok(())
    }

    fn summary(&self) {
        if let Some(took) = self.first_install {
            eprintln!("e2e: first install to Ready: {:.1} s (target 30 s)", took.as_secs_f64());
        }
        eprintln!("e2e: load through the gateway, {CLIENTS} clients:");
        eprintln!(
            "e2e:   {:<28} {:>8} {:>7} {:>8} {:>8} {:>8} {:>9}",
            "phase", "requests", "failed", "p50 ms", "p99 ms", "max ms", "settle s"
        );
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        for p in &self.phases {
            eprintln!(
                "e2e:   {:<28} {:>8} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>9}",
                p.name,
                p.report.requests,
                p.report.failures,
                ms(p.report.percentile(0.5)),
                ms(p.report.percentile(0.99)),
                ms(p.report.percentile(1.0)),
                p.settled_after.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64()))
            );
        }
    }

    fn verdict(&self) -> Result<()> {
        let mut all = self.findings.clone();
        for p in self.phases.iter().filter(|p| p.report.failures > 0) {
            let reasons: Vec<String> = p.report.reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect();
            all.push(format!(
                "{}: {} of {} requests failed ({})",
                p.name,
                p.report.failures,
                p.report.requests,
                reasons.join(", ")
            ));
        }
        if !all.is_empty() {
            bail!("{} problem(s):\n  {}", all.len(), all.join("\n  "));
        }
        Ok(())
    }
}

async fn steps(run: &mut Run<'_>, book: &mut Book) -> Result<()> {
    run.step("create the namespace, the CRD (upgrade path), helm install the operator chart");
    run.create_namespace().await?;
    run.crd_upgrade_path().await?;
    run.helm_install().await?;

    run.step("first install: a stack with the managed MySQL and 2 replicas of everything, to Ready");
    let stack = two_of_everything(run.example_stack(false).await?, run.c.node_port);
    run.prepare_volume(&stack).await?;
    if let Some(port) = run.c.node_port {
        run.check_node_port_free(port).await?;
    }
    first_install(run, book, &stack).await?;

    run.step("reach the gateway through its NodePort");
    let url = match &run.c.gateway_url {
        Some(url) => url.clone(),
        None => format!("http://{}:{}", run.c.node_host, run.gateway_node_port().await?),
    };
    eprintln!("e2e: gateway at {url}");
    let gw = Gateway::new(url.clone())?;
    gw.wait_ready(Duration::from_secs(60)).await.context(
        "the gateway's NodePort (set MALL_E2E_NODE_HOST or MALL_E2E_GATEWAY_URL if it answers elsewhere)",
    )?;

    run.step("a witness user with an order and a cart; products and users for the load");
    let admin_email = run.stacks().get(STACK).await?.spec.admin.email;
    let admin = gw.login(&admin_email, &run.admin_password().await?).await?;
    let witness = Witness::create(&gw, &admin).await?;
    let mut products = Vec::new();
    for i in 0..3 {
        products.push(gw.create_product(&admin, &format!("Load item {i}"), "3.00", 1_000_000).await?);
    }
    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        let email = format!("ops-load-{i}-{}@example.com", suffix());
        gw.register(&email, PASSWORD).await?;
        tokens.push(gw.login(&email, PASSWORD).await?);
    }
    let plan = Plan { url, tokens, products, pause: run.c.load_pause, timeout: REQUEST_TIMEOUT };

    run.step("steady load, no disruption");
    let load = Load::start(&plan, STEADY + Duration::from_secs(30))?;
    tokio::time::sleep(STEADY).await;
    let report = load.stop().await;
    report.print("steady");
    book.phases.push(Phase { name: "steady".into(), report, settled_after: None });
    witness.check(&gw, book, "steady").await;

    let first = run.c.image_tag.clone();
    match run.c.image_tag_next.clone() {
        Some(next) => {
            run.step(&format!("rollout under load: image tag {first} → {next}"));
            retag(run, book, &plan, &format!("rollout to {next}"), &next).await?;
            witness.check(&gw, book, "rollout").await;

            run.step(&format!("rollback under load: image tag {next} → {first}"));
            retag(run, book, &plan, &format!("rollback to {first}"), &first).await?;
            witness.check(&gw, book, "rollback").await;
        }
        None => skip(
            "the rollout and rollback phases",
            "MALL_E2E_IMAGE_TAG_NEXT is not set (a second tag of MALL_E2E_IMAGE's image, loaded into the cluster)",
        ),
    }

    run.step("lost pods under load: one pod of every component deleted");
    let lose_pods = || async {
        let pods = run.api::<Pod>();
        let mut deleted = Vec::new();
        for component in COMPONENTS {
            let list = pods.list(&ListParams::default().labels(&selector(component))).await?;
            let pod = list
                .items
                .into_iter()
                .find(|p| p.metadata.deletion_timestamp.is_none())
                .with_context(|| format!("no running pod of {component}"))?;
            pods.delete(&pod.name_any(), &DeleteParams::default()).await?;
            deleted.push(pod.name_any());
        }
        eprintln!("e2e: deleted {}", deleted.join(", "));
        Ok(())
    };
    under_load(run, book, &plan, "lost pods", lose_pods, &|_: &Settled| None).await?;
    witness.check(&gw, book, "lost pods").await;

    run.step("gateway restart under load (kubectl rollout restart, through the API)");
    let stamp = Timestamp::now().to_string();
    let restart = || async {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}});
        run.api::<Deployment>()
            .patch(&format!("{STACK}-gateway"), &manager(), &Patch::Strategic(&patch))
            .await
            .context("restarting the gateway Deployment")?;
        Ok(())
    };
    let restarted = |s: &Settled| {
        let old: Vec<String> = s
            .pods
            .iter()
            .filter(|p| p.labels().get("app.kubernetes.io/component").is_some_and(|c| c == "gateway"))
            .filter(|p| p.annotations().get(RESTARTED_AT) != Some(&stamp))
            .map(|p| p.name_any())
            .collect();
        (!old.is_empty()).then(|| format!("gateway pods from before the restart: {}", old.join(", ")))
    };
    under_load(run, book, &plan, "gateway restart", restart, &restarted).await?;
    witness.check(&gw, book, "gateway restart").await;
    run.done();
    Ok(())
}

/// The example with two replicas of the gateway and of every service, the gateway a NodePort (on
/// `node_port`, or one the API server picks).
fn two_of_everything(mut stack: Value, node_port: Option<i32>) -> Value {
    let spec = &mut stack["spec"];
    spec["gateway"]["replicas"] = json!(REPLICAS);
    spec["gateway"]["serviceType"] = json!("NodePort");
    match node_port {
        Some(port) => spec["gateway"]["nodePort"] = json!(port),
        None => {
            if let Some(gateway) = spec["gateway"].as_object_mut() {
                gateway.remove("nodePort");
            }
        }
    }
    for service in &COMPONENTS[1..] {
        spec["services"][*service] = json!({"replicas": REPLICAS});
    }
    stack
}

/// Applies the stack and times it to Ready, noting when the database and the migrations got there;
/// then checks that every migration went through on its first try.
async fn first_install(run: &Run<'_>, book: &mut Book, stack: &Value) -> Result<()> {
    let started = Instant::now();
    run.apply_stack(stack).await?;
    let mut marks: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut last = String::new();
    let stack = loop {
        let stack = run.stacks().get(STACK).await?;
        let seen = components(&stack);
        if seen != last {
            eprintln!("e2e:   [{:>6.1}s] {seen}", started.elapsed().as_secs_f64());
            last = seen;
        }
        if let Some(status) = &stack.status {
            for condition in [DATABASE_READY, MIGRATIONS_COMPLETE] {
                if status.condition(condition).is_some_and(|c| c.status == "True") {
                    marks.entry(condition).or_insert_with(|| started.elapsed());
                }
            }
        }
        if is_ready(&stack) {
            break stack;
        }
        if started.elapsed() > run.c.ready_timeout {
            bail!("not Ready {:?} after apply; status: {}", run.c.ready_timeout, json!(stack.status));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let took = started.elapsed();
    book.first_install = Some(took);
    let marks: Vec<String> =
        marks.iter().map(|(c, at)| format!("{c} at {:.1} s", at.as_secs_f64())).collect();
    eprintln!(
        "e2e: first install: Ready {:.1} s after apply ({}; {}); the target is 30 s",
        took.as_secs_f64(),
        marks.join(", "),
        stack.status.as_ref().and_then(|s| s.ready_components.clone()).unwrap_or_default()
    );
    if took > run.c.install_limit {
        book.find(format!(
            "first install: Ready after {:.1} s, over MALL_E2E_INSTALL_LIMIT ({} s)",
            took.as_secs_f64(),
            run.c.install_limit.as_secs()
        ));
    }
    book.migrations(run, "first install").await
}

/// Runs the load through `disrupt` until the stack has settled (and `check` holds), from `LEAD` before
/// to `TAIL` after; records the phase.
async fn under_load<F, Fut>(
    run: &Run<'_>,
    book: &mut Book,
    plan: &Plan,
    name: &str,
    disrupt: F,
    check: &(dyn Fn(&Settled) -> Option<String> + Sync),
) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let timeout = run.c.phase_timeout;
    let load = Load::start(plan, LEAD + timeout + TAIL + Duration::from_secs(30))?;
    tokio::time::sleep(LEAD).await;
    let disrupted = Instant::now();
    let settled = match disrupt().await {
        Ok(()) => run.wait_settled(timeout, check).await.map(|()| disrupted.elapsed()),
        Err(e) => Err(e),
    };
    if settled.is_ok() {
        tokio::time::sleep(TAIL).await;
    }
    let report = load.stop().await;
    report.print(name);
    let settled_after = settled.as_ref().ok().copied();
    if let Some(after) = settled_after {
        eprintln!("e2e: {name}: settled {:.1} s after the disruption", after.as_secs_f64());
    }
    book.phases.push(Phase { name: name.to_owned(), report, settled_after });
    settled.map(|_| ()).with_context(|| format!("{name}: the stack did not settle"))
}

/// Sets `spec.image.tag` under load and waits until every component runs it; then the migrations.
async fn retag(run: &Run<'_>, book: &mut Book, plan: &Plan, name: &str, tag: &str) -> Result<()> {
    let image = format!("{}:{tag}", run.c.image_repository);
    let retag = || async {
        run.patch_spec(json!({"image": {"tag": tag}})).await?;
        Ok(())
    };
    let on_image = |s: &Settled| {
        let images = s.images();
        let behind: Vec<String> = COMPONENTS
            .iter()
            .filter(|c| images.get(**c) != Some(&image))
            .map(|c| format!("{c} ({})", images.get(*c).map_or("none", String::as_str)))
            .collect();
        (!behind.is_empty()).then(|| format!("not on {image} yet: {}", behind.join(", ")))
    };
    under_load(run, book, plan, name, retag, &on_image).await?;
    book.migrations(run, name).await
}

/// A user registered before the phases, with a paid order, a cart line and the product they bought:
/// after every phase they must all still be there.
struct Witness {
    email: String,
    product: i64,
    order_id: String,
    /// The product's stock after the order (created with 100, 2 bought).
    stock: i64,
}

impl Witness {
    async fn create(gw: &Gateway, admin: &str) -> Result<Witness> {
        let email = format!("ops-witness-{}@example.com", suffix());
        gw.register(&email, PASSWORD).await?;
        let token = gw.login(&email, PASSWORD).await?;
        let product = gw.create_product(admin, "Witness teapot", "21.00", 100).await?;
        let add = |quantity: i64| json!({"product_id": product, "quantity": quantity});
        gw.post("/cart/additem", &add(2), Some(&token)).await?.expect(200, "witness: add to cart")?;
        let (order_id, _) = gw.checkout(&token, &email).await.context("witness: checkout")?;
        gw.post("/cart/additem", &add(3), Some(&token)).await?.expect(200, "witness: fill the cart again")?;
        let witness = Witness { email, product, order_id, stock: 98 };
        witness.verify(gw).await.context("the witness right after it was made")?;
        Ok(witness)
    }

    /// Logs in again and finds everything; a miss is a finding of `phase`.
    async fn check(&self, gw: &Gateway, book: &mut Book, phase: &str) {
        match self.verify(gw).await {
            Ok(()) => eprintln!("e2e: {phase}: the witness's account, order, cart and product are intact"),
            Err(e) => book.find(format!("{phase}: data: {e:#}")),
        }
    }

    async fn verify(&self, gw: &Gateway) -> Result<()> {
        let token = gw.login(&self.email, PASSWORD).await?;
        let me = gw.get("/user/me", Some(&token)).await?.expect(200, "/user/me")?;
        ensure!(me.data()["email"] == self.email.as_str(), "/user/me: {}", me.body);

        let cart = gw.get("/cart", Some(&token)).await?.expect(200, "/cart")?;
        let lines = cart.data()["items"].as_array().cloned().unwrap_or_default();
        ensure!(
            lines.len() == 1 && lines[0]["product_id"] == self.product && lines[0]["quantity"] == 3,
            "the cart should hold 3 of product {}: {}",
            self.product,
            cart.body
        );

        let orders = gw.get("/orders", Some(&token)).await?.expect(200, "/orders")?;
        let order = orders.data()["items"]
            .as_array()
            .and_then(|items| items.iter().find(|o| o["order_id"] == self.order_id.as_str()))
            .with_context(|| format!("order {} is not listed: {}", self.order_id, orders.body))?;
        ensure!(order["status"] == "paid", "order {} is {}", self.order_id, order["status"]);
        ensure!(order["total_cents"] == 4200, "order {} total: {}", self.order_id, order);

        let product =
            gw.get(&format!("/products/{}", self.product), None).await?.expect(200, "the product")?;
        let data = product.data();
        ensure!(
            data["name"] == "Witness teapot" && data["price_cents"] == 2100 && data["stock"] == self.stock,
            "product {}: {}",
            self.product,
            product.body
        );
        Ok(())
    }
}
