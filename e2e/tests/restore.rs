//! The restore drill on a real cluster (settings in `mall_e2e::cluster`):
//!
//! 1. the minimal example with the managed MySQL and `spec.backup`, to Ready;
//! 2. a customer registers and places two orders (checkout: paid), the catalog's stock moves;
//! 3. a backup asked for (`mall.example.com/backup-now`) succeeds;
//! 4. the stack is deleted and its data with it (the MySQL claim; the backup claim stays);
//! 5. a new stack of the same name with `spec.restore.from` = that backup restores, then migrates and
//!    starts: the same customer logs in with the same password and sees the same orders, paid, and the
//!    product's stock is what it was;
//! 6. a second restore into the stack, which has data now, is refused in status (and nothing changes);
//!    removing `spec.restore` makes it Ready again;
//! 7. one service paused (`spec.services.payment.paused`) is scaled to zero and says so, the stack stays
//!    Ready; unpaused, it comes back.
//!
//! `a_deleted_stack_comes_back_from_its_bucket` runs the same drill with the backups in an
//! S3-compatible bucket (`MALL_E2E_S3_*`, see there) instead of the claim.
//!
//! It prints the timings the drill is judged by: the backup, the restore, the restored stack's Ready,
//! and the backup's size. Without `KUBECONFIG` and `MALL_E2E_IMAGE` it says why and passes (unless
//! `MALL_E2E_REQUIRE=1`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch};
use mall_e2e::cluster::{Cluster, wait_for};
use mall_e2e::gateway::Gateway;
use mall_e2e::run::{Run, STACK, manager, selector};
use mall_operator::builders::{BACKUP_NOW_ANNOTATION, backup_job_name};
use mall_operator::crd::{MallStack, RestorePhase};
use mall_operator::status::RESTORED;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stack_comes_back_from_its_backup() {
    let Some(cluster) = Cluster::for_test("restore drill").await else { return };
    let mut run = Run::new(&cluster, "mall-restore");
    let result = steps(&mut run, None).await;
    run.finish(result).await;
}

/// The same drill with the backups in an S3-compatible bucket: `MALL_E2E_S3_ENDPOINT` (reachable from
/// the pods and from here, e.g. `http://10.244.0.1:9000`), `MALL_E2E_S3_BUCKET` (default `mall-e2e`,
/// made if missing), `MALL_E2E_S3_ACCESS_KEY_ID` and `MALL_E2E_S3_SECRET_ACCESS_KEY` (default `test`, as
/// moto takes). Each run writes under a prefix of its own. Unset: it says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stack_comes_back_from_its_bucket() {
    let Ok(endpoint) = std::env::var("MALL_E2E_S3_ENDPOINT") else {
        eprintln!("e2e: MALL_E2E_S3_ENDPOINT is not set: the restore drill from a bucket is skipped");
        return;
    };
    let Some(cluster) = Cluster::for_test("restore drill from a bucket").await else { return };
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let bucket = Bucket {
        endpoint,
        bucket: var("MALL_E2E_S3_BUCKET", "mall-e2e"),
        access_key_id: var("MALL_E2E_S3_ACCESS_KEY_ID", "test"),
        secret_access_key: var("MALL_E2E_S3_SECRET_ACCESS_KEY", "test"),
    };
    let mut run = Run::new(&cluster, "mall-restore-s3");
    let result = steps(&mut run, Some(&bucket)).await;
    run.finish(result).await;
}

/// Where the bucket drill keeps its backups.
struct Bucket {
    endpoint: String,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
}

const BUCKET_SECRET: &str = "mall-e2e-bucket";

/// Makes the bucket if it is not there (an S3-compatible test server takes an unsigned PUT), and the
/// Secret the stack names, with a prefix of this run's own.
async fn prepare_bucket(run: &Run<'_>, bucket: &Bucket) -> Result<()> {
    let url = format!("{}/{}", bucket.endpoint.trim_end_matches('/'), bucket.bucket);
    let made = reqwest::Client::new().put(&url).send().await.with_context(|| format!("PUT {url}"))?;
    eprintln!("e2e: bucket {url}: {}", made.status());
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": BUCKET_SECRET},
        "stringData": {
            "endpoint": bucket.endpoint, "bucket": bucket.bucket, "accessKeyId": bucket.access_key_id,
            "secretAccessKey": bucket.secret_access_key, "prefix": format!("{}/", run.ns),
        }
    }))?;
    run.api::<k8s_openapi::api::core::v1::Secret>()
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .context("creating the bucket's Secret")?;
    Ok(())
}

const PASSWORD: &str = "correct horse battery";

/// What the customer and the catalog look like: the customer's orders (id, status, total in cents),
/// newest first, and the product's stock.
#[derive(Debug, PartialEq)]
struct Shop {
    orders: Vec<(String, String, i64)>,
    stock: i64,
}

async fn look(gw: &Gateway, email: &str, product: i64) -> Result<Shop> {
    let token = gw.login(email, PASSWORD).await.context("the customer logs in")?;
    let reply = gw.get("/orders?page=1&page_size=50", Some(&token)).await?.expect(200, "the order list")?;
    let data = reply.data();
    let list = data["orders"].as_array().or_else(|| data["items"].as_array()).or_else(|| data.as_array());
    let list = list.with_context(|| format!("no orders in {data}"))?;
    let orders = list
        .iter()
        .map(|o| {
            Ok((
                o["order_id"].as_str().or_else(|| o["id"].as_str()).context("an order id")?.to_owned(),
                o["status"].as_str().context("an order status")?.to_owned(),
                o["total_cents"].as_i64().context("an order total")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let product = gw.get(&format!("/products/{product}"), None).await?.expect(200, "the product")?;
    let stock = product.data()["stock"].as_i64().context("the product's stock")?;
    Ok(Shop { orders, stock })
}

/// Annotates backup-now and waits for its success: (the backup's name, seconds it took).
async fn backup_now(run: &Run<'_>) -> Result<(String, f64)> {
    let token = format!("e2e-{}", mall_e2e::cluster::suffix());
    let patch = json!({"metadata": {"annotations": {BACKUP_NOW_ANNOTATION: token}}});
    let stacks = run.stacks();
    let started = Instant::now();
    stacks.patch(STACK, &manager(), &Patch::Merge(&patch)).await.context("annotating backup-now")?;
    let job = backup_job_name(&stacks.get(STACK).await?, &token);
    wait_for(Duration::from_secs(300), Duration::from_secs(2), || {
        let (stacks, job) = (stacks.clone(), job.clone());
        async move {
            let stack = stacks.get(STACK).await?;
            let Some(backup) = stack.status.as_ref().and_then(|s| s.backup.clone()) else { return Ok(false) };
            if let Some(failure) = backup.last_failure.as_ref().filter(|f| f.job == job) {
                bail!("the backup Job {job} failed: {}", failure.reason);
            }
            Ok(backup.last_success.as_ref().is_some_and(|s| s.job == job && s.name != s.job))
        }
    })
    .await
    .context("waiting for the backup")?;
    let stack = stacks.get(STACK).await?;
    let name = stack.status.and_then(|s| s.backup).and_then(|b| b.last_success).context("lastSuccess")?.name;
    Ok((name, started.elapsed().as_secs_f64()))
}

/// The bytes of the backup `name`, from the JSON line its Job's pod left.
async fn backup_bytes(run: &Run<'_>) -> Result<u64> {
    let pods: Api<Pod> = run.api();
    let listed = pods.list(&ListParams::default().labels(&selector("backup"))).await?;
    let said = listed.items.iter().filter_map(|p| {
        let states = p.status.as_ref()?.container_statuses.as_ref()?;
        states.iter().find_map(|c| {
            let message = c.state.as_ref()?.terminated.as_ref()?.message.clone()?;
            serde_json::from_str::<Value>(message.trim()).ok()?["bytes"].as_u64()
        })
    });
    said.max().context("no backup pod told its size")
}

async fn wait_gone(run: &Run<'_>) -> Result<()> {
    let stacks = run.stacks();
    let pods: Api<Pod> = run.api();
    wait_for(Duration::from_secs(180), Duration::from_secs(2), || {
        let (stacks, pods) = (stacks.clone(), pods.clone());
        async move {
            let stack_gone = stacks.get_opt(STACK).await?.is_none();
            let left = pods
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={STACK}")))
                .await?;
            Ok(stack_gone && left.items.is_empty())
        }
    })
    .await
    .context("waiting for the stack and its pods to go")
}

async fn steps(run: &mut Run<'_>, bucket: Option<&Bucket>) -> Result<()> {
    run.step("create the namespace, the CRD, helm install the operator chart");
    run.create_namespace().await?;
    run.crd_upgrade_path().await?;
    run.helm_install().await?;

    run.step("the minimal example with the managed MySQL and backups, to Ready");
    let mut stack = run.example_stack(false).await?;
    ensure!(!stack["spec"]["database"]["managed"].is_null(), "the drill needs the managed MySQL");
    ensure!(
        stack["spec"]["database"]["managed"]["retainOnDelete"] != json!(false),
        "the backup claim outlives the stack only with retainOnDelete"
    );
    let target = match bucket {
        None => json!({"pvc": {"size": "1Gi"}}),
        Some(bucket) => {
            prepare_bucket(run, bucket).await?;
            json!({"s3": {"secretName": BUCKET_SECRET}})
        }
    };
    stack["spec"]["backup"] = json!({"schedule": "17 3 1 1 *", "retention": {"count": 3}, "target": target});
    if run.c.hostpath_pv_dir.is_some() {
        bail!("the restore drill needs a volume provisioner (MALL_E2E_HOSTPATH_PV_DIR is set)");
    }
    run.apply_stack(&stack).await?;
    run.wait_ready(run.c.ready_timeout, None).await?;

    run.step("a customer registers and places two orders");
    let (shop, product, email) = {
        let (gw, _forward) = run.gateway().await?;
        let (email, token, product) = run.shopper_with_cart(&gw, "Drill lamp", "19.99", 10, 2).await?;
        let (first, _) = gw.checkout(&token, &email).await?;
        gw.post("/cart/additem", &json!({"product_id": product, "quantity": 3}), Some(&token))
            .await?
            .expect(200, "add to cart")?;
        let (second, _) = gw.checkout(&token, &email).await?;
        let shop = look(&gw, &email, product).await?;
        ensure!(shop.orders.len() == 2, "two orders: {shop:?}");
        ensure!(shop.orders.iter().any(|o| o.0 == first) && shop.orders.iter().any(|o| o.0 == second));
        ensure!(shop.stock == 5, "10 in stock, 2 and 3 sold: {shop:?}");
        eprintln!("e2e: {email}: {shop:?}");
        (shop, product, email)
    };

    run.step("backup-now");
    let (backup, took) = backup_now(run).await?;
    let bytes = backup_bytes(run).await?;
    eprintln!("e2e: DRILL backup {backup}: {bytes} bytes, {took:.1} s from the annotation to lastSuccess");

    run.step("delete the stack and its data (the MySQL claim); the backup claim stays");
    let started = Instant::now();
    run.stacks().delete(STACK, &DeleteParams::foreground()).await.context("deleting the stack")?;
    wait_gone(run).await?;
    let claims: Api<PersistentVolumeClaim> = run.api();
    let data = format!("data-{STACK}-mysql-0");
    claims.delete(&data, &DeleteParams::default()).await.context("deleting the MySQL claim")?;
    wait_for(Duration::from_secs(120), Duration::from_secs(1), || {
        let (claims, data) = (claims.clone(), data.clone());
        async move { Ok(claims.get_opt(&data).await?.is_none()) }
    })
    .await
    .context("waiting for the MySQL claim to go")?;
    if bucket.is_none() {
        let kept = claims.get_opt(&format!("{STACK}-backups")).await?;
        ensure!(kept.is_some(), "the backup claim was kept");
    }
    eprintln!("e2e: stack and data gone in {:.1} s", started.elapsed().as_secs_f64());

    run.step("a new stack restores from the backup, then migrates and starts");
    let mut again = stack.clone();
    again["spec"]["restore"] = json!({"from": backup});
    let started = Instant::now();
    run.apply_stack(&again).await?;
    let restored = run
        .wait_ready(
            run.c.ready_timeout * 2,
            Some(&|s: &MallStack| {
                s.status
                    .as_ref()
                    .and_then(|st| st.restore.as_ref())
                    .is_some_and(|r| r.phase == RestorePhase::Succeeded)
            }),
        )
        .await?;
    let ready_in = started.elapsed().as_secs_f64();
    let status = restored.status.as_ref().context("a status")?;
    let restore = status.restore.as_ref().context("status.restore")?;
    ensure!(status.condition(RESTORED).is_some_and(|c| c.status == "True"), "Restored: {status:?}");
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = run.api();
    let job = jobs.get(restore.job.as_deref().context("the restore Job's name")?).await?;
    let job_took = match job.status.as_ref().map(|s| (&s.start_time, &s.completion_time)) {
        Some((Some(start), Some(end))) => end.0.duration_since(start.0).as_secs_f64(),
        _ => f64::NAN,
    };
    eprintln!(
        "e2e: DRILL restore of {backup}: Job {job_took:.1} s ({}); stack Ready {ready_in:.1} s after it was applied",
        restore.message
    );

    run.step("the same customer sees the same orders; the stock is as it was");
    {
        let (gw, _forward) = run.gateway().await?;
        gw.wait_ready(Duration::from_secs(60)).await?;
        let now = look(&gw, &email, product).await?;
        ensure!(now == shop, "after the restore {now:?}, before {shop:?}");
        eprintln!("e2e: {email} logs in again and sees {} orders; stock {}", now.orders.len(), now.stock);
    }

    run.step("another restore into the stack, which has data now, is refused in status");
    let (second, _) = backup_now(run).await?;
    ensure!(second != backup, "a second backup: {second}");
    run.patch_spec(json!({"restore": {"from": second}})).await?;
    let refused = wait_for(Duration::from_secs(180), Duration::from_secs(2), || {
        let (stacks, second) = (run.stacks(), second.clone());
        async move {
            let stack = stacks.get(STACK).await?;
            let restore = stack.status.as_ref().and_then(|s| s.restore.clone());
            Ok(restore.is_some_and(|r| r.from == second && r.phase == RestorePhase::Refused))
        }
    })
    .await;
    refused.context("waiting for the refusal")?;
    let stack = run.stacks().get(STACK).await?;
    let status = stack.status.as_ref().context("a status")?;
    let message = &status.restore.as_ref().context("status.restore")?.message;
    ensure!(message.contains("already has") && message.contains("tables"), "the refusal says why: {message}");
    let degraded = status.condition("Degraded").context("Degraded")?;
    ensure!(degraded.status == "True" && degraded.reason == "RestoreRefused", "{degraded:?}");
    eprintln!("e2e: refused: {message}");
    {
        let (gw, _forward) = run.gateway().await?;
        ensure!(look(&gw, &email, product).await? == shop, "nothing changed");
    }
    run.patch_spec(json!({"restore": null})).await?;
    run.wait_ready(run.c.ready_timeout, None).await?;

    run.step("payment paused: scaled to zero, said in status, the stack stays Ready; then back");
    run.patch_spec(json!({"services": {"payment": {"paused": true}}})).await?;
    let pods: Api<Pod> = run.api();
    let paused = |stack: &MallStack| {
        stack.status.as_ref().and_then(|s| s.components.get("payment")).is_some_and(|p| {
            p.reason.as_deref() == Some("Paused")
                && p.message.as_deref().is_some_and(|m| m.ends_with("scaled to zero"))
        })
    };
    run.wait_ready(Duration::from_secs(120), Some(&paused)).await?;
    let left = pods.list(&ListParams::default().labels(&selector("payment"))).await?;
    ensure!(
        left.items.iter().all(|p| p.metadata.deletion_timestamp.is_some()),
        "payment's pods are going: {:?}",
        left.items.iter().map(|p| p.metadata.name.clone()).collect::<Vec<_>>()
    );
    run.patch_spec(json!({"services": {"payment": {"paused": false}}})).await?;
    let back = |stack: &MallStack| {
        stack
            .status
            .as_ref()
            .and_then(|s| s.components.get("payment"))
            .is_some_and(|p| p.ready == 1 && p.reason.is_none())
    };
    run.wait_ready(Duration::from_secs(180), Some(&back)).await?;
    Ok(())
}
