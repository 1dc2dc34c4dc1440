//! An email address, as every service takes it: the user service's rule, which accounts, orders and
//! checkouts all share.

use std::fmt;

use crate::{Invalid, Problem};

/// Longest address (RFC 5321's path limit), in bytes.
pub const MAX_EMAIL: usize = 254;
/// Longest part before the `@`.
pub const MAX_LOCAL: usize = 64;
/// Longest label of the domain.
const MAX_LABEL: usize = 63;
/// What the part before the `@` may hold besides letters and digits.
const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";

/// A trimmed, lowercased and plausibly deliverable address: `local@domain.tld`, at most 254 bytes, a
/// local part of 1 to 64 letters, digits and `!#$%&'*+-/=?^_`{|}~.` (no leading, trailing or doubled
/// dot), and a domain of two or more labels of letters, digits and inner hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, Invalid> {
        let email = raw.trim().to_lowercase();
        let invalid = |why| Err(Invalid::new("email", Problem::Malformed(why)));
        if email.is_empty() {
            return Err(Invalid::required("email"));
        }
        if email.len() > MAX_EMAIL {
            return invalid("longer than 254 characters");
        }
        let Some((local, domain)) = email.split_once('@') else {
            return invalid("it has no @");
        };
        if local.is_empty() || local.len() > MAX_LOCAL {
            return invalid("the part before @ must be 1 to 64 characters");
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("it contains spaces");
        }
        let local_ok = local.chars().all(|c| c.is_alphanumeric() || LOCAL_SPECIALS.contains(c))
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
                    && l.len() <= MAX_LABEL
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

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> String {
        email.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> String {
        Email::parse(raw).expect_err(raw).to_string()
    }

    #[test]
    fn valid_addresses_are_trimmed_and_lowercased() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        for ok in ["a.b+tag@mail.example.co.uk", "x@a-b.io", "o'neil@example.com", "δοκιμή@παράδειγμα.δοκιμή"]
        {
            assert_eq!(Email::parse(ok).unwrap().to_string(), ok);
        }
    }

    #[test]
    fn boundaries() {
        let local64 = format!("{}@example.com", "a".repeat(64));
        assert!(Email::parse(&local64).is_ok());
        assert_eq!(
            refused(&format!("{}@example.com", "a".repeat(65))),
            "email is not valid: the part before @ must be 1 to 64 characters"
        );
        // 254 bytes in all: 64 before the @, 189 after it.
        let domain = format!("{}.{}.{}.{}", "b".repeat(61), "c".repeat(61), "d".repeat(61), "e".repeat(3));
        let longest = format!("{}@{domain}", "a".repeat(254 - 1 - domain.len()));
        assert_eq!(longest.len(), 254);
        assert!(Email::parse(&longest).is_ok(), "{longest}");
        assert_eq!(refused(&format!("a{longest}")), "email is not valid: longer than 254 characters");
        assert!(Email::parse(&format!("a@{}.com", "b".repeat(63))).is_ok());
        assert_eq!(
            refused(&format!("a@{}.com", "b".repeat(64))),
            "email is not valid: the domain must look like example.com"
        );
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(refused(""), "email is required");
        assert_eq!(refused("   "), "email is required");
        assert_eq!(refused("alice"), "email is not valid: it has no @");
        assert_eq!(
            refused("@example.com"),
            "email is not valid: the part before @ must be 1 to 64 characters"
        );
        assert_eq!(refused("al ice@example.com"), "email is not valid: it contains spaces");
        assert_eq!(refused("alice@exa\u{7}mple.com"), "email is not valid: it contains spaces");
        for bad_local in
            [".alice@example.com", "alice.@example.com", "a..b@example.com", "al<ice@example.com"]
        {
            assert_eq!(
                refused(bad_local),
                "email is not valid: the part before @ has characters an address cannot have",
                "{bad_local}"
            );
        }
        for bad_domain in [
            "alice@",
            "alice@example",
            "alice@@example.com",
            "alice@.com",
            "alice@-x.com",
            "alice@x-.com",
            "alice@example..com",
            "alice@exa_mple.com",
            "alice@example.com.",
        ] {
            assert_eq!(
                refused(bad_domain),
                "email is not valid: the domain must look like example.com",
                "{bad_domain}"
            );
        }
    }
}
