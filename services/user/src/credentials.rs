//! Validated credentials: an email that is normalised once at the edge, a password within bounds, and
//! argon2id hashing.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::UserError;

/// A normalised (trimmed, lowercase) and plausibly deliverable email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, UserError> {
        let email = raw.trim().to_lowercase();
        let invalid = |why: &str| Err(UserError::InvalidArgument(format!("email is not valid: {why}")));
        if email.is_empty() {
            return Err(UserError::InvalidArgument("email is required".into()));
        }
        if email.len() > 254 {
            return invalid("longer than 254 characters");
        }
        let Some((local, domain)) = email.split_once('@') else {
            return invalid("it has no @");
        };
        if local.is_empty() || local.len() > 64 {
            return invalid("the part before @ must be 1 to 64 characters");
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("it contains spaces");
        }
        let local_ok = local.chars().all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return invalid("the part before @ has characters an address cannot have");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return invalid("the domain must look like example.com");
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of 8 to 128 characters.
pub struct Password(String);

impl Password {
    pub const MIN: usize = 8;
    pub const MAX: usize = 128;

    pub fn parse(raw: &str) -> Result<Password, UserError> {
        let n = raw.chars().count();
        if n < Self::MIN {
            return Err(UserError::InvalidArgument(format!(
                "password must be at least {} characters",
                Self::MIN
            )));
        }
        if n > Self::MAX {
            return Err(UserError::InvalidArgument(format!(
                "password must be at most {} characters",
                Self::MAX
            )));
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An argon2id PHC string for the password (default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, UserError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UserError::Internal(format!("hashing failed: {e}")))
}

/// Whether `password` matches the stored PHC string; an unreadable hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        assert_eq!(
            Email::parse("a.b+tag@mail.example.co.uk").unwrap().as_str(),
            "a.b+tag@mail.example.co.uk"
        );
    }

    #[test]
    fn bad_emails_are_refused() {
        for bad in [
            "",
            "   ",
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "alice@@example.com",
            "al ice@example.com",
            "alice@exa mple.com",
            ".alice@example.com",
            "alice.@example.com",
            "a..b@example.com",
            "alice@-x.com",
            "alice@x-.com",
            "alice@example..com",
            "alice@exa_mple.com",
            "al<ice@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long = format!("a@{}.com", "b".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn passwords_are_8_to_128_characters() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"x".repeat(128)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        // Characters, not bytes: eight non-ASCII characters are enough.
        assert!(Password::parse("ééééééé").is_err());
        assert!(Password::parse("éééééééé").is_ok());
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("correct horsf", &a));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
