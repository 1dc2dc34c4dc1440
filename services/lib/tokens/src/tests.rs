//! Unit tests of claims, signing, verification and expiry.

use super::*;

const NOW: i64 = 1_800_000_000;

fn signed(key: &SigningKey, ttl: i64) -> (Claims, String) {
    let claims = Claims::new(42, Role::Customer, NOW, ttl);
    let token = key.sign(&claims).unwrap();
    (claims, token)
}

#[test]
fn claims_carry_user_role_and_lifetime() {
    let claims = Claims::new(7, Role::Admin, NOW, 3600);
    assert_eq!(claims.user_id(), Ok(7));
    assert_eq!(claims.role, Role::Admin);
    assert_eq!(claims.iat, NOW);
    assert_eq!(claims.exp, NOW + 3600);
    assert_eq!(claims.remaining(NOW + 600), 3000);
    assert_eq!(claims.remaining(NOW + 7200), 0);
    assert_ne!(claims.jti, Claims::new(7, Role::Admin, NOW, 3600).jti, "every token gets its own id");
}

#[test]
fn a_signed_token_verifies_with_the_public_key() {
    let key = SigningKey::generate();
    let (claims, token) = signed(&key, 60);
    let verifier = Verifier::new([key.public_key()]);
    assert_eq!(verifier.verify(&token, NOW + 59), Ok(claims));
    assert_eq!(Verifier::kid_of(&token).unwrap(), key.kid());
}

#[test]
fn a_token_expires_exactly_at_exp() {
    let key = SigningKey::generate();
    let (_, token) = signed(&key, 60);
    let verifier = Verifier::new([key.public_key()]);
    assert_eq!(verifier.verify(&token, NOW + 60), Err(TokenError::Expired));
    assert_eq!(verifier.verify(&token, NOW + 10_000), Err(TokenError::Expired));
}

#[test]
fn a_token_from_another_key_is_refused() {
    let ours = SigningKey::generate();
    let theirs = SigningKey::generate();
    let (_, token) = signed(&theirs, 60);
    let verifier = Verifier::new([ours.public_key()]);
    assert!(matches!(verifier.verify(&token, NOW), Err(TokenError::UnknownKey(_))));

    // Same kid, other key: the signature does not verify.
    let forged = PublicKey { kid: theirs.kid().to_owned(), key: ours.public_key().key };
    let verifier = Verifier::new([forged]);
    assert_eq!(verifier.verify(&token, NOW), Err(TokenError::BadSignature));
}

#[test]
fn a_tampered_payload_is_refused() {
    let key = SigningKey::generate();
    let (_, token) = signed(&key, 60);
    let mut parts: Vec<&str> = token.split('.').collect();
    let admin = Claims::new(42, Role::Admin, NOW, 60);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap());
    parts[1] = &payload;
    let verifier = Verifier::new([key.public_key()]);
    assert_eq!(verifier.verify(&parts.join("."), NOW), Err(TokenError::BadSignature));
}

#[test]
fn alg_none_and_hmac_tokens_are_refused() {
    let key = SigningKey::generate();
    let verifier = Verifier::new([key.public_key()]);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Claims::new(1, Role::Admin, NOW, 60)).unwrap());
    let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#), claims);
    assert!(verifier.verify(&none, NOW).is_err());

    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid().to_owned());
    let hs = jsonwebtoken::encode(
        &header,
        &Claims::new(1, Role::Admin, NOW, 60),
        &EncodingKey::from_secret(&key.public_key().key),
    )
    .unwrap();
    assert_eq!(verifier.verify(&hs, NOW), Err(TokenError::WrongAlgorithm));
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let verifier = Verifier::new([SigningKey::generate().public_key()]);
    for token in ["", "abc", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30.AAAA"] {
        assert!(verifier.verify(token, NOW).is_err(), "{token:?} must be refused");
    }
}

#[test]
fn keys_round_trip_through_pem_with_a_stable_kid() {
    let key = SigningKey::generate();
    let pem = key.to_pkcs8_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(again.kid(), key.kid());
    assert_eq!(again.public_key(), key.public_key());
    assert!(SigningKey::from_pkcs8_pem("not a key").is_err());
    assert!(format!("{key:?}").contains(key.kid()) && !format!("{key:?}").contains("PRIVATE"));
}

#[test]
fn public_keys_of_the_wrong_length_are_refused() {
    assert!(PublicKey::from_slice("k", &[1; 31]).is_err());
    assert!(PublicKey::from_slice("k", &[]).is_err());
    let key = SigningKey::generate().public_key();
    assert_eq!(PublicKey::from_slice(&key.kid, &key.key), Ok(key));
}

#[test]
fn roles_parse_and_print() {
    assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
    assert_eq!(Role::Customer.to_string(), "customer");
    assert!("root".parse::<Role>().is_err());
}

#[test]
fn a_public_key_travels_as_base64_and_keeps_its_kid() {
    let key = SigningKey::generate();
    let text = key.public_key().to_base64();
    let back = PublicKey::from_base64(&text).unwrap();
    assert_eq!(back, key.public_key());
    assert!(matches!(PublicKey::from_base64("not base64!"), Err(TokenError::BadKey(_))));
    assert!(matches!(PublicKey::from_base64("AAAA"), Err(TokenError::BadKey(_))), "4 bytes is no key");
}
