//! Auth's signing keys through whole reconciles: the key file started from the single key a stack had,
//! a rotation's phases on their time (each an event, the status telling where it stands), and a bad
//! rotation time reported while the stack is still reconciled.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use mall_tokens::SigningKey;

use super::*;
use crate::builders::{LAST_ROTATION_ANNOTATION, PUBLISHED_AT_ANNOTATION};

const KEYS: &str = "/api/v1/namespaces/mall/secrets/shop-auth-keys";

/// The key file an applied `shop-auth-keys` carries.
fn key_file(secret: &Value) -> Value {
    let encoded = secret["data"]["keys.json"].as_str().unwrap();
    serde_json::from_slice(&STANDARD.decode(encoded).unwrap()).unwrap()
}

fn pems(file: &Value) -> Vec<(String, bool, Option<i64>)> {
    file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (k["pem"].as_str().unwrap().to_owned(), k["signs"].as_bool().unwrap(), k["retiresAt"].as_i64())
        })
        .collect()
}

fn kid(pem: &str) -> String {
    SigningKey::from_pkcs8_pem(pem).unwrap().kid().to_owned()
}

fn time(value: &Value) -> jiff::Timestamp {
    value.as_str().unwrap().parse().unwrap()
}

/// `auth` of `status`, checked to hold nothing private.
fn auth(status: &Value) -> &Value {
    assert!(!status.to_string().contains("PRIVATE KEY"), "{status}");
    &status["auth"]
}

/// A stack whose auth signed with the one key of `<stack>-auth-signing-key` (before the key file).
fn legacy_secret(key: &SigningKey) -> Value {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("shop-auth-signing-key".into()),
            namespace: Some("mall".into()),
            ..ObjectMeta::default()
        },
        data: Some([("signing-key.pem".to_owned(), ByteString(key.to_pkcs8_pem().into_bytes()))].into()),
        ..Secret::default()
    };
    stored(&secret)
}

#[tokio::test]
async fn a_stack_from_before_the_key_file_keeps_signing_with_its_key() {
    let stack = minimal_stack();
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    let legacy = SigningKey::generate();
    let (client, mut server) = mock_client();
    let script = {
        let (stack, legacy) = (stack.clone(), legacy.clone());
        async move {
            reads(&mut server, vec![legacy_secret(&legacy)], vec![], vec![], vec![]).await;
            let received = server.apply(KEYS).await;
            assert_eq!(
                pems(&key_file(&received.body)),
                [(legacy.to_pkcs8_pem(), true, None)],
                "the key tokens were signed with goes on signing"
            );
            assert!(received.body["metadata"]["annotations"].is_null(), "no rotation recorded");
            let body = received.body.clone();
            received.ok(&body);
            // The single-key Secret is left as it is: neither applied nor deleted.
            applies(&mut server, &expected[1..], settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(
                auth(&status),
                &json!({"activeKid": legacy.kid(), "keys": [{"kid": legacy.kid(), "state": "signing"}]})
            );
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
        }
    };
    let action = run(stack, context(client), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn a_rotation_is_published_signs_after_the_delay_and_the_old_key_retires() {
    let mut stack = minimal_stack();
    stack.spec.auth.rotate_signing_key_at = Some("2025-06-01T00:00:00Z".into());
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    // The key file as it was before: one key, last rotated before the request.
    let before = KeyRing::fresh("2025-01-01T00:00:00Z".parse().unwrap());
    let old_pem = before.keys[0].pem.clone();
    let old_kid = before.keys[0].kid.clone();
    let listed = stored(&auth_keys_secret(&stack, &before));

    // Phase 1: a new key, published only; back in 90 s.
    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, expected, old_pem, old_kid) =
            (stack.clone(), expected.clone(), old_pem.clone(), old_kid.clone());
        async move {
            reads(&mut server, vec![listed], vec![], vec![], vec![]).await;
            let received = server.apply(KEYS).await;
            let keys = pems(&key_file(&received.body));
            assert_eq!(keys.len(), 2);
            assert_eq!(keys[0], (old_pem, true, None), "the old key still signs");
            assert_eq!((keys[1].1, keys[1].2), (false, None), "the new key is published only");
            let new_kid = kid(&keys[1].0);
            let annotations = &received.body["metadata"]["annotations"];
            assert_eq!(annotations[LAST_ROTATION_ANNOTATION], "2025-06-01T00:00:00Z");
            let published = time(&annotations[PUBLISHED_AT_ANNOTATION]);
            assert!(jiff::Timestamp::now().duration_since(published).as_secs() < 5, "published now");
            let applied = received.body.clone();
            received.ok(&applied);
            let told = event(&mut server, "Normal", "SigningKeyPublished").await;
            assert_eq!(told["action"], "RotateSigningKey");
            let note = told["note"].as_str().unwrap();
            assert!(note.contains(&new_kid) && !note.contains("PRIVATE"), "{note}");

            applies(&mut server, &expected[1..], settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let auth = auth(&status);
            assert_eq!(auth["activeKid"], old_kid.as_str());
            assert_eq!(auth["lastRotation"], "2025-06-01T00:00:00Z");
            assert_eq!(auth["keys"][0], json!({"kid": old_kid, "state": "signing"}));
            assert_eq!(
                (&auth["keys"][1]["kid"], &auth["keys"][1]["state"]),
                (&json!(new_kid), &json!("published"))
            );
            assert_eq!(
                time(&auth["keys"][1]["signsFrom"]),
                published.checked_add(jiff::SignedDuration::from_secs(90)).unwrap()
            );
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
            tx.send((applied, status, new_kid, server)).ok();
        }
    };
    let action = run(stack.clone(), ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(90)), "phase 2 comes on time");
    let (applied, status, new_kid, mut server) = rx.await.unwrap();

    // Phase 2, the delay passed (the key was published 100 s ago): the new key signs, the old one retires
    // a token lifetime plus the delay from now.
    let mut published = stack.clone();
    published.status = Some(serde_json::from_value(status).unwrap());
    let mut listed = applied;
    let long_ago = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(100)).unwrap();
    listed["metadata"]["annotations"][PUBLISHED_AT_ANNOTATION] = json!(long_ago.to_string());
    listed["metadata"]["uid"] = json!("uid-shop-auth-keys");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, expected, old_pem, old_kid, new_kid) =
            (published.clone(), expected.clone(), old_pem.clone(), old_kid.clone(), new_kid.clone());
        async move {
            reads(&mut server, vec![listed], vec![], vec![], vec![]).await;
            let received = server.apply(KEYS).await;
            let keys = pems(&key_file(&received.body));
            let now = jiff::Timestamp::now().as_second();
            let retires_at = keys[0].2.unwrap();
            assert_eq!((keys[0].0.as_str(), keys[0].1), (old_pem.as_str(), false));
            assert!((now + 86_400 + 90 - retires_at).abs() <= 2, "{retires_at} vs {now}");
            assert_eq!((kid(&keys[1].0), keys[1].1, keys[1].2), (new_kid.clone(), true, None));
            let annotations = received.body["metadata"]["annotations"].as_object().unwrap().clone();
            assert_eq!(annotations.keys().collect::<Vec<_>>(), [LAST_ROTATION_ANNOTATION], "nothing waits");
            let applied = received.body.clone();
            received.ok(&applied);
            let told = event(&mut server, "Normal", "SigningKeyActivated").await;
            let note = told["note"].as_str().unwrap();
            assert!(note.contains(&new_kid) && note.contains(&old_kid), "{note}");

            applies(&mut server, &expected[1..], settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            // Only the keys changed: a status write, no condition event.
            let status = status_patch(&mut server, &stack).await;
            let auth = auth(&status);
            assert_eq!(auth["activeKid"], new_kid.as_str());
            assert_eq!(auth["keys"][0]["state"], "retiring");
            assert_eq!(time(&auth["keys"][0]["retiresAt"]).as_second(), retires_at);
            assert_eq!(auth["keys"][1], json!({"kid": new_kid, "state": "signing"}));
            tx.send((applied, status, server)).ok();
        }
    };
    let action = run(published, ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)), "retirement is a day away");
    let (applied, status, mut server) = rx.await.unwrap();

    // Phase 3, once retiresAt has passed: the old key leaves the file.
    let mut rotated = stack.clone();
    rotated.status = Some(serde_json::from_value(status).unwrap());
    let mut file = key_file(&applied);
    file["keys"][0]["retiresAt"] = json!(jiff::Timestamp::now().as_second() - 1);
    let mut listed = applied;
    listed["data"]["keys.json"] = json!(STANDARD.encode(serde_json::to_vec(&file).unwrap()));
    let script = {
        let (stack, old_kid, new_kid) = (rotated.clone(), old_kid.clone(), new_kid.clone());
        async move {
            reads(&mut server, vec![listed], vec![], vec![], vec![]).await;
            let received = server.apply(KEYS).await;
            let keys = pems(&key_file(&received.body));
            assert_eq!(keys.len(), 1);
            assert_eq!((kid(&keys[0].0), keys[0].1), (new_kid.clone(), true));
            let body = received.body.clone();
            received.ok(&body);
            let told = event(&mut server, "Normal", "SigningKeyRetired").await;
            assert!(told["note"].as_str().unwrap().contains(&old_kid));
            applies(&mut server, &expected[1..], settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(auth(&status)["keys"], json!([{"kid": new_kid, "state": "signing"}]));
        }
    };
    run(rotated, ctx, script).await.unwrap();
}

#[tokio::test]
async fn a_bad_rotation_time_is_reported_once_and_the_stack_still_reconciled() {
    let mut stack = minimal_stack();
    stack.spec.auth.rotate_signing_key_at = Some("next tuesday".into());
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    let ring = KeyRing::fresh("2025-01-01T00:00:00Z".parse().unwrap());
    let listed = stored(&auth_keys_secret(&stack, &ring));
    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, expected, listed) = (stack.clone(), expected.clone(), listed.clone());
        async move {
            reads(&mut server, vec![listed.clone()], vec![], vec![], vec![]).await;
            let received = server.apply(KEYS).await;
            assert_eq!(received.body["data"], listed["data"], "the key file is left as it was");
            received.ok(&listed);
            let warning = event(&mut server, "Warning", "SigningKeyProblem").await;
            assert!(warning["note"].as_str().unwrap().contains("next tuesday"), "{warning}");
            applies(&mut server, &expected[1..], settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let problem = auth(&status)["problem"].as_str().unwrap();
            assert!(problem.starts_with("spec.auth.rotateSigningKeyAt: \"next tuesday\""), "{problem}");
            assert_eq!(condition(&status, "Ready")["status"], "True", "the rest of the stack is fine");
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
            tx.send((status, server)).ok();
        }
    };
    let action = run(stack.clone(), ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let (status, mut server) = rx.await.unwrap();

    // Told once: the next reconcile finds the same problem in the status and says nothing more.
    let mut reported = stack.clone();
    reported.status = Some(serde_json::from_value(status).unwrap());
    let script = async move {
        reads(&mut server, vec![listed.clone()], vec![], vec![], vec![]).await;
        server.apply(KEYS).await.ok(&listed);
        applies(&mut server, &expected[1..], settled).await;
        nothing_pruned(&mut server, vec![], vec![], vec![]).await;
        // No event and no status write: the reconcile ends here.
    };
    run(reported, ctx, script).await.unwrap();
}
