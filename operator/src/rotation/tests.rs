use super::*;
use crate::crd::MallStackSpec;
use crate::fixtures::minimal_stack;

const T0: i64 = 1_764_000_000;
const DAY: i64 = 86_400;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

/// The minimal stack's spec (token lifetime 24 h), asking for a rotation at `rotate_at`.
fn spec(rotate_at: Option<&str>) -> MallStackSpec {
    let mut spec = minimal_stack().spec;
    spec.auth.rotate_signing_key_at = rotate_at.map(str::to_owned);
    spec
}

fn states(outcome: &Outcome) -> Vec<(String, AuthKeyState)> {
    outcome.status.keys.iter().map(|k| (k.kid.clone(), k.state)).collect()
}

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

/// Steps `ring` at `now` the way the reconciler does: with the status the previous step wrote.
fn next(ring: &KeyRing, spec: &MallStackSpec, previous: &Outcome, now: i64) -> Outcome {
    step(ring, spec, Some(&previous.status), at(now))
}

#[test]
fn no_rotation_requested_leaves_a_fresh_key_file_alone() {
    let ring = KeyRing::fresh(at(T0));
    assert_eq!(ring.keys.len(), 1);
    assert!(ring.keys[0].signs && ring.keys[0].retires_at.is_none());
    assert_eq!(ring.last_rotation, Some(at(T0)), "a new key counts as rotated when it was made");

    let outcome = step(&ring, &spec(None), None, at(T0 + 10));
    assert_eq!(outcome.ring, ring);
    assert_eq!(outcome.ring.file(), ring.file(), "the file does not churn");
    assert!(outcome.phases.is_empty());
    assert_eq!(outcome.requeue_after, None);
    let kid = ring.keys[0].kid.clone();
    assert_eq!(
        outcome.status,
        AuthKeysStatus {
            active_kid: Some(kid.clone()),
            keys: vec![AuthKeyStatus {
                kid,
                state: AuthKeyState::Signing,
                signs_from: None,
                retires_at: None
            }],
            last_rotation: Some(at(T0).to_string()),
            problem: None,
        }
    );
    // Again, with that status: the same.
    assert_eq!(next(&outcome.ring, &spec(None), &outcome, T0 + 400), outcome);
}

#[test]
fn a_request_older_than_a_fresh_key_file_is_already_satisfied() {
    let ring = KeyRing::fresh(at(T0));
    let outcome = step(&ring, &spec(Some("2025-01-01T00:00:00Z")), None, at(T0 + 10));
    assert_eq!(outcome.ring, ring);
    assert!(outcome.phases.is_empty());
}

#[test]
fn a_bad_timestamp_is_reported_and_nothing_rotates() {
    let ring = KeyRing::fresh(at(T0));
    for bad in ["tomorrow", "2025-13-01T00:00:00Z", "2025-12-05 10:00", "2025-12-05T10:00:00", ""] {
        let outcome = step(&ring, &spec(Some(bad)), None, at(T0 + 10));
        assert_eq!(outcome.ring, ring, "{bad:?}");
        assert!(outcome.phases.is_empty());
        assert_eq!(outcome.requeue_after, None);
        let problem = outcome.status.problem.as_deref().unwrap();
        assert!(
            problem.starts_with("spec.auth.rotateSigningKeyAt:") && problem.contains("RFC 3339"),
            "{problem}"
        );
        assert_eq!(outcome.status.active_kid.as_deref(), Some(ring.keys[0].kid.as_str()));
    }
    // Mended: the problem goes away.
    let mended = step(&ring, &spec(Some("2025-01-01T00:00:00Z")), None, at(T0 + 10));
    assert_eq!(mended.status.problem, None);
}

/// A stack carried over from the single-key Secret, at `T0`, with its status.
fn adopted() -> (KeyRing, Outcome) {
    let legacy = mall_tokens::SigningKey::generate();
    let ring = KeyRing::adopt(&legacy.to_pkcs8_pem()).unwrap();
    assert_eq!(ring.keys[0].kid, legacy.kid());
    assert_eq!(ring.last_rotation, None, "no rotation recorded: any request replaces the key");
    let outcome = step(&ring, &spec(None), None, at(T0));
    assert_eq!(outcome.ring, ring);
    (ring, outcome)
}

#[test]
fn a_rotation_goes_through_every_phase_on_time() {
    let (ring, first) = adopted();
    let old = ring.keys[0].kid.clone();
    let requested = at(T0 + 3600).to_string();
    let spec = spec(Some(&requested));

    // Asked for an hour from now: nothing yet, and a wake-up then.
    let early = next(&ring, &spec, &first, T0);
    assert_eq!(early.ring, ring);
    assert!(early.phases.is_empty());
    assert_eq!(early.requeue_after, secs(3600));
    let early = next(&ring, &spec, &first, T0 + 3599);
    assert_eq!((early.ring.keys.len(), early.requeue_after), (1, secs(1)));

    // Phase 1 at the requested time: a new key, published only.
    let t1 = T0 + 3600;
    let one = next(&ring, &spec, &first, t1);
    let new = one.ring.keys[1].kid.clone();
    assert_ne!(new, old);
    assert_eq!(
        one.phases,
        [Phase::Published { kid: new.clone(), signs_from: at(t1 + PROPAGATION_DELAY_SECONDS) }]
    );
    assert_eq!(one.ring.keys[0], ring.keys[0], "the old key still signs, untouched");
    assert!(!one.ring.keys[1].signs && one.ring.keys[1].retires_at.is_none());
    assert_eq!(one.ring.published_at, Some(at(t1)));
    assert_eq!(one.ring.last_rotation, Some(at(t1)));
    assert_eq!(one.requeue_after, secs(90));
    assert_eq!(states(&one), [(old.clone(), AuthKeyState::Signing), (new.clone(), AuthKeyState::Published)]);
    assert_eq!(one.status.active_kid.as_deref(), Some(old.as_str()));
    assert_eq!(one.status.keys[1].signs_from, Some(at(t1 + 90).to_string()));
    assert_eq!(one.status.last_rotation, Some(requested.clone()));

    // Not before the propagation delay: the same file, woken up when it is due.
    for (elapsed, wait) in [(0, 90), (1, 89), (60, 30), (89, 1)] {
        let waiting = next(&one.ring, &spec, &one, t1 + elapsed);
        assert_eq!(waiting.ring, one.ring, "{elapsed}s after publishing");
        assert!(waiting.phases.is_empty());
        assert_eq!(waiting.requeue_after, secs(wait));
    }

    // Phase 2: the new key signs, the old one retires a token lifetime plus the delay later.
    let t2 = t1 + 90;
    let two = next(&one.ring, &spec, &one, t2);
    let retires_at = t2 + DAY + PROPAGATION_DELAY_SECONDS;
    assert_eq!(
        two.phases,
        [Phase::Activated { kid: new.clone(), retiring: vec![old.clone()], retires_at: at(retires_at) }]
    );
    assert_eq!((two.ring.keys[0].signs, two.ring.keys[0].retires_at), (false, Some(retires_at)));
    assert_eq!((two.ring.keys[1].signs, two.ring.keys[1].retires_at), (true, None));
    assert_eq!(two.ring.keys[1].pem, one.ring.keys[1].pem);
    assert_eq!(two.ring.published_at, None);
    assert_eq!(two.requeue_after, secs((DAY + PROPAGATION_DELAY_SECONDS) as u64));
    assert_eq!(two.status.active_kid.as_deref(), Some(new.as_str()));
    assert_eq!(states(&two), [(old.clone(), AuthKeyState::Retiring), (new.clone(), AuthKeyState::Signing)]);
    assert_eq!(two.status.keys[0].retires_at, Some(at(retires_at).to_string()));
    assert_eq!(two.status.last_rotation, Some(requested.clone()));
    // The same request does not rotate again.
    let settled = next(&two.ring, &spec, &two, t2 + 600);
    assert_eq!(settled.ring, two.ring);
    assert!(settled.phases.is_empty());
    assert_eq!(settled.requeue_after, secs((retires_at - t2 - 600) as u64));

    // Phase 3: out of the file once retiresAt has passed, not a second earlier.
    let before = next(&two.ring, &spec, &two, retires_at - 1);
    assert_eq!((before.ring.keys.len(), before.requeue_after), (2, secs(1)));
    let three = next(&two.ring, &spec, &two, retires_at);
    assert_eq!(three.phases, [Phase::Retired { kid: old.clone() }]);
    assert_eq!(three.ring.keys, [two.ring.keys[1].clone()]);
    assert_eq!(three.requeue_after, None);
    assert_eq!(states(&three), [(new.clone(), AuthKeyState::Signing)]);

    // A second rotation, later: the same phases again, from the key that signs now.
    let again = at(retires_at + 7 * DAY).to_string();
    let spec2 = self::spec(Some(&again));
    let t4 = retires_at + 7 * DAY + 5;
    let four = next(&three.ring, &spec2, &three, t4);
    assert_eq!(four.ring.keys.len(), 2);
    let newer = four.ring.keys[1].kid.clone();
    assert_eq!(four.phases, [Phase::Published { kid: newer.clone(), signs_from: at(t4 + 90) }]);
    assert_eq!(four.status.last_rotation, Some(again.clone()));
    let five = next(&four.ring, &spec2, &four, t4 + 90);
    assert_eq!(states(&five), [(new.clone(), AuthKeyState::Retiring), (newer, AuthKeyState::Signing)]);

    // A request at or before the last one acted on does nothing.
    let older = self::spec(Some(&requested));
    let ignored = next(&five.ring, &older, &five, t4 + 200);
    assert_eq!(ignored.ring, five.ring);
    assert!(ignored.phases.is_empty());
}

#[test]
fn a_stale_status_never_rotates_twice() {
    let (ring, first) = adopted();
    let requested = at(T0).to_string();
    let spec = spec(Some(&requested));
    let one = next(&ring, &spec, &first, T0 + 5);
    assert_eq!(one.phases.len(), 1);
    // The next reconcile sees the Secret just written but the stack's status from before.
    let stale = next(&one.ring, &spec, &first, T0 + 6);
    assert_eq!(stale.ring, one.ring, "the Secret's bookkeeping says the request was acted on");
    assert!(stale.phases.is_empty());
    let two = next(&one.ring, &spec, &first, T0 + 95);
    assert_eq!(two.phases.len(), 1, "phase 2 still comes");
    let stale = next(&two.ring, &spec, &first, T0 + 96);
    assert_eq!(stale.ring, two.ring);
    assert!(stale.phases.is_empty());

    // The other way round: the Secret's bookkeeping lost, the status remembers.
    let mut forgetful = two.ring.clone();
    forgetful.last_rotation = None;
    let kept = next(&forgetful, &spec, &two, T0 + 97);
    assert!(kept.phases.is_empty());
    assert_eq!(kept.ring.last_rotation, Some(at(T0)));
}

#[test]
fn a_pending_key_of_unknown_age_waits_the_whole_delay() {
    let (ring, first) = adopted();
    let one = next(&ring, &spec(Some(&at(T0).to_string())), &first, T0);
    let mut lost = one.ring.clone();
    lost.published_at = None;
    // No bookkeeping and no status: taken as published now.
    let outcome = step(&lost, &spec(None), None, at(T0 + 50));
    assert_eq!(outcome.ring.published_at, Some(at(T0 + 50)));
    assert_eq!(outcome.requeue_after, secs(90));
    assert!(outcome.phases.is_empty());
    // No bookkeeping, but the status says when it signs.
    let outcome = step(&lost, &spec(None), Some(&one.status), at(T0 + 50));
    assert_eq!(outcome.ring.published_at, Some(at(T0)));
    assert_eq!(outcome.requeue_after, secs(40));
}

#[test]
fn a_newer_request_during_a_rotation_follows_right_after_it() {
    let (ring, first) = adopted();
    let one = next(&ring, &spec(Some(&at(T0).to_string())), &first, T0);
    // Asked again while the first one waits for its delay: it waits its turn.
    let spec = spec(Some(&at(T0 + 30).to_string()));
    let waiting = next(&one.ring, &spec, &one, T0 + 40);
    assert!(waiting.phases.is_empty());
    assert_eq!((waiting.ring.keys.len(), waiting.requeue_after), (2, secs(50)));
    let two = next(&one.ring, &spec, &one, T0 + 90);
    assert!(matches!(two.phases.as_slice(), [Phase::Activated { .. }]));
    assert_eq!(two.requeue_after, secs(1), "the next rotation is due at once");
    let again = next(&two.ring, &spec, &two, T0 + 91);
    assert!(matches!(again.phases.as_slice(), [Phase::Published { .. }]));
    assert_eq!(again.ring.keys.len(), 3);
    assert_eq!(again.status.last_rotation, Some(at(T0 + 30).to_string()));
}

#[test]
fn the_key_file_is_the_documented_json() {
    let (ring, first) = adopted();
    let one = next(&ring, &spec(Some(&at(T0).to_string())), &first, T0);
    let two = next(&one.ring, &spec(Some(&at(T0).to_string())), &one, T0 + 90);
    let file: serde_json::Value = serde_json::from_slice(&two.ring.file()).unwrap();
    assert_eq!(
        file,
        serde_json::json!({"keys": [
            {"pem": ring.keys[0].pem, "signs": false, "retiresAt": T0 + 90 + DAY + 90},
            {"pem": one.ring.keys[1].pem, "signs": true},
        ]})
    );
    assert!(ring.keys[0].pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    // Read back with its bookkeeping: the same ring.
    let (back, skipped) = KeyRing::read(&two.ring.file(), two.ring.last_rotation, None).unwrap();
    assert_eq!((back, skipped), (two.ring.clone(), vec![]));
    // `signs` may be left out (false); other fields are ignored.
    let (sparse, _) = KeyRing::read(
        format!(
            r#"{{"keys":[{{"pem":{:?}}}, {{"pem":{:?},"signs":true,"note":"x"}}]}}"#,
            ring.keys[0].pem, one.ring.keys[1].pem
        )
        .as_bytes(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(sparse.keys.iter().map(|k| k.signs).collect::<Vec<_>>(), [false, true]);
}

#[test]
fn nothing_private_is_shown() {
    let (ring, first) = adopted();
    let one = next(&ring, &spec(Some(&at(T0).to_string())), &first, T0);
    let status = serde_json::to_string(&one.status).unwrap();
    let debug = format!("{:?} {:?}", one.ring, one);
    for text in [&status, &debug] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        for key in &one.ring.keys {
            let body: String = key.pem.lines().nth(1).unwrap().to_owned();
            assert!(!text.contains(&body), "{text}");
        }
    }
    for phase in &one.phases {
        assert!(!phase.note().contains("PRIVATE"));
    }
    // A broken file is described by position only, never quoted.
    let secret_looking = br#"{"keys": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA"}"#;
    let error = KeyRing::read(secret_looking, None, None).unwrap_err();
    assert!(matches!(error, KeyFileError::NotAKeyFile { line: 1, .. }), "{error:?}");
    assert!(!error.to_string().contains("MC4C"), "{error}");
}

#[test]
fn a_broken_key_file_is_repaired_and_reported() {
    let a = Key::generate(true);
    let b = Key::generate(true);
    let c = Key::generate(false);
    let spec = spec(None);

    // No key at all: a fresh one, and the loss is reported.
    let empty = KeyRing::default();
    let outcome = step(&empty, &spec, None, at(T0));
    assert_eq!(outcome.ring.keys.len(), 1);
    assert!(outcome.ring.keys[0].signs);
    assert!(outcome.status.problem.as_deref().unwrap().contains("no usable key"));
    assert_eq!(outcome.ring.last_rotation, Some(at(T0)));

    // Two signers: the first keeps signing, the other retires like a replaced key.
    let two = KeyRing { keys: vec![a.clone(), b.clone()], ..KeyRing::default() };
    let outcome = step(&two, &spec, None, at(T0));
    assert_eq!(outcome.status.active_kid.as_deref(), Some(a.kid.as_str()));
    assert_eq!(outcome.ring.keys[1].retires_at, Some(T0 + DAY + 90));
    assert!(outcome.status.problem.as_deref().unwrap().contains(&b.kid));
    assert_eq!(outcome.requeue_after, secs((DAY + 90) as u64));

    // No signer: the newest key not retiring signs.
    let mut retiring = a.clone();
    (retiring.signs, retiring.retires_at) = (false, Some(T0 + 100));
    let none = KeyRing { keys: vec![retiring, c.clone()], ..KeyRing::default() };
    let outcome = step(&none, &spec, None, at(T0));
    assert_eq!(outcome.status.active_kid.as_deref(), Some(c.kid.as_str()));
    assert!(outcome.status.problem.as_deref().unwrap().contains("signs now"));

    // A key that does not parse is left out and named by position.
    let file =
        format!(r#"{{"keys":[{{"pem":"garbage","signs":false}},{{"pem":{:?},"signs":true}}]}}"#, a.pem);
    let (ring, skipped) = KeyRing::read(file.as_bytes(), None, None).unwrap();
    assert_eq!(ring.keys, std::slice::from_ref(&a));
    assert_eq!(skipped, [KeyFileError::BadKey { index: 0 }]);
}

#[test]
fn an_unusable_token_lifetime_holds_the_rotation_back() {
    let (ring, first) = adopted();
    let mut spec = spec(Some(&at(T0).to_string()));
    spec.token_ttl = "forever".into();
    let outcome = next(&ring, &spec, &first, T0);
    assert_eq!(outcome.ring, ring);
    assert!(outcome.status.problem.as_deref().unwrap().starts_with("spec.tokenTtl:"));
}

#[test]
fn token_lifetimes_parse_like_the_services_do() {
    for (text, seconds) in [
        ("90s", Some(90)),
        ("30m", Some(1800)),
        ("24h", Some(86_400)),
        ("7d", Some(604_800)),
        ("45", Some(45)),
    ] {
        assert_eq!(token_ttl_seconds(text), seconds, "{text}");
    }
    for bad in ["", "h", "1w", "-5m", "1.5h", "99999999999999999999d"] {
        assert_eq!(token_ttl_seconds(bad), None, "{bad}");
    }
}

#[test]
fn rotation_times_are_read_as_rfc_3339_in_its_every_form() {
    // What the chart's values schema lets through is read here too.
    for text in [
        "2025-12-05T10:00:00Z",
        "2025-12-05t10:00:00z",
        "2025-12-05 10:00:00Z",
        "2025-12-05T10:00:00.250Z",
        "2025-12-05T12:00:00+02:00",
        "2025-12-05T05:00:00-05:00",
    ] {
        let requested = requested_rotation(&spec(Some(text))).unwrap().unwrap();
        assert_eq!(requested.as_second(), at(1_764_928_800).as_second(), "{text}");
    }
    assert_eq!(requested_rotation(&spec(None)), Ok(None));
}
