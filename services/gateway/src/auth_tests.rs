//! The token check's key refresh against a stand-in for auth, on paused time: one fetch for many
//! requests, at most one per gap, a timer that drops withdrawn keys, and retired keys refused.

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use mall_tokens::SigningKey;

use super::*;

/// Answers what the test puts in `keys` (an error when `None`), after a moment, and counts calls.
#[derive(Clone, Default)]
struct FakeAuth {
    keys: Arc<StdMutex<Option<Vec<PublicKey>>>>,
    calls: Arc<AtomicUsize>,
}

impl FakeAuth {
    fn publish(&self, keys: &[PublicKey]) {
        *self.keys.lock().unwrap() = Some(keys.to_vec());
    }
    fn go_down(&self) {
        *self.keys.lock().unwrap() = None;
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl KeySource for FakeAuth {
    fn fetch(
        &self,
        _kid: Option<&str>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<PublicKey>, ApiError>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            this.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let keys = this.keys.lock().unwrap().clone();
            keys.ok_or_else(|| ApiError::Unavailable("the auth service is unavailable".into()))
        })
    }
}

fn token(key: &SigningKey) -> String {
    key.sign(&Claims::new(5, Role::Customer, now_unix(), 3600)).unwrap()
}

fn check_with(auth: &FakeAuth) -> Arc<TokenCheck> {
    let cache = Cache::memory(&format!("t{}", uuid::Uuid::new_v4().simple()));
    Arc::new(TokenCheck::new(auth.clone(), cache, KeyRefresh::default()))
}

fn log_in_again() -> ApiError {
    ApiError::Unauthenticated(LOG_IN_AGAIN.into())
}

#[tokio::test(start_paused = true)]
async fn unknown_kids_share_one_fetch_and_fetch_at_most_once_per_gap() {
    let auth = FakeAuth::default();
    let (a, b, c) = (SigningKey::generate(), SigningKey::generate(), SigningKey::generate());
    auth.publish(&[a.public_key()]);
    let check = check_with(&auth);
    assert_eq!(check.check(&token(&a)).await.unwrap().sub, "5");
    assert_eq!(auth.calls(), 1, "the first token fetches the keys");

    // b is new: twenty requests at once wait for one fetch, and all pass.
    tokio::time::advance(Duration::from_secs(5)).await;
    auth.publish(&[a.public_key(), b.public_key()]);
    let tb = token(&b);
    let all = futures::future::join_all((0..20).map(|_| check.check(&tb))).await;
    assert!(all.iter().all(Result::is_ok), "{all:?}");
    assert_eq!(auth.calls(), 2);

    // c appears right after: no fetch within the gap, so c's token is refused for now.
    auth.publish(&[a.public_key(), b.public_key(), c.public_key()]);
    let tc = token(&c);
    assert_eq!(check.check(&tc).await.unwrap_err(), log_in_again());
    tokio::time::advance(Duration::from_millis(4_900)).await;
    assert_eq!(check.check(&tc).await.unwrap_err(), log_in_again());
    assert_eq!(auth.calls(), 2, "at most one fetch per 5 s");
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(check.check(&tc).await.is_ok());
    assert_eq!(auth.calls(), 3);

    // A made-up kid right after: refused without a call.
    let stranger = SigningKey::generate();
    assert_eq!(check.check(&token(&stranger)).await.unwrap_err(), log_in_again());
    assert_eq!(auth.calls(), 3);
}

/// Lets due timers fire: a short sleep, which the paused clock reaches only after every earlier timer.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn the_timer_drops_withdrawn_keys_and_retired_keys_are_refused() {
    let auth = FakeAuth::default();
    let (a, b) = (SigningKey::generate(), SigningKey::generate());
    auth.publish(&[a.public_key(), b.public_key()]);
    let check = check_with(&auth);
    let stop = CancellationToken::new();
    TokenCheck::spawn_refresh(&check, stop.clone());
    let ta = token(&a);
    assert!(check.check(&ta).await.is_ok());
    assert!(check.check(&ta).await.is_ok(), "again, from the verified-token cache");
    assert_eq!(auth.calls(), 1);

    // Auth withdraws a: until the timer fetches, this gateway still knows it.
    auth.publish(&[b.public_key()]);
    tokio::time::advance(Duration::from_secs(59)).await;
    settle().await;
    assert!(check.check(&ta).await.is_ok());
    assert_eq!(auth.calls(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    tokio::time::advance(Duration::from_millis(50)).await;
    settle().await;
    assert_eq!(auth.calls(), 2, "fetched by the timer after 60 s");
    assert_eq!(check.check(&ta).await.unwrap_err(), log_in_again(), "the cached token is refused too");
    assert!(check.check(&token(&b)).await.is_ok());

    // A key published with a retirement time in the past verifies nothing, at once.
    let c = SigningKey::generate();
    tokio::time::advance(Duration::from_secs(5)).await;
    auth.publish(&[b.public_key(), c.public_key().retiring_at(Some(now_unix() - 1))]);
    assert_eq!(check.check(&token(&c)).await.unwrap_err(), log_in_again());

    stop.cancel();
    settle().await;
    let calls = auth.calls();
    tokio::time::advance(Duration::from_secs(120)).await;
    settle().await;
    assert_eq!(auth.calls(), calls, "no refresh after the gateway stopped");
}

#[tokio::test(start_paused = true)]
async fn while_auth_is_unreachable_tokens_get_503_and_auth_is_not_hammered() {
    let auth = FakeAuth::default();
    let a = SigningKey::generate();
    let check = check_with(&auth);
    let ta = token(&a);
    assert!(matches!(check.check(&ta).await, Err(ApiError::Unavailable(_))));
    assert!(matches!(check.check(&ta).await, Err(ApiError::Unavailable(_))));
    assert_eq!(auth.calls(), 1, "a failed fetch is not retried within the gap");
    auth.publish(&[a.public_key()]);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(check.check(&ta).await.is_ok());
    assert_eq!(auth.calls(), 2);

    // Once it has keys, a fetch that fails for an unknown kid is a 503 too, not "log in again".
    let b = SigningKey::generate();
    auth.go_down();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(matches!(check.check(&token(&b)).await, Err(ApiError::Unavailable(_))));
    assert!(check.check(&ta).await.is_ok(), "known keys keep working while auth is down");
}
