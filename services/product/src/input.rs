//! Request validation: every value that reaches the store has been checked here, with messages a
//! person can act on.

use std::collections::HashSet;

use mall_domain::ProductId;

use crate::ProductError;

/// The highest stock an admin can set.
pub(crate) const MAX_STOCK: i64 = 1_000_000_000;

const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 5000;
const MAX_PICTURE_CHARS: usize = 1000;
const MAX_CATEGORY_CHARS: usize = 50;
const MAX_CATEGORIES: usize = 20;
const MAX_QUERY_CHARS: usize = 100;
const DEFAULT_PAGE_SIZE: i32 = 20;
const MAX_PAGE_SIZE: i32 = 100;
/// Most ids one BatchGetProducts may ask for.
pub(crate) const MAX_BATCH: usize = 100;

fn invalid<T>(msg: impl Into<String>) -> Result<T, ProductError> {
    Err(ProductError::InvalidArgument(msg.into()))
}

/// A product name: trimmed, 1 to 200 characters.
pub(crate) fn name(raw: &str) -> Result<String, ProductError> {
    let name = raw.trim();
    if name.is_empty() {
        return invalid("name is required");
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return invalid(format!("name must be at most {MAX_NAME_CHARS} characters (it has {chars})"));
    }
    Ok(name.to_owned())
}

/// A description of at most 5000 characters, kept as given.
pub(crate) fn description(raw: &str) -> Result<String, ProductError> {
    let chars = raw.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return invalid(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters (it has {chars})"
        ));
    }
    Ok(raw.to_owned())
}

/// A picture URL of at most 1000 characters, kept as given: empty, a path on this site (`/static/…`),
/// or an `http(s)://` address. Browsers are given it as is and the server never fetches it, so no other
/// scheme (`javascript:`, `data:`, `file:`) and no scheme-relative `//host` may get in.
pub(crate) fn picture(raw: &str) -> Result<String, ProductError> {
    let chars = raw.chars().count();
    if chars > MAX_PICTURE_CHARS {
        return invalid(format!("picture must be at most {MAX_PICTURE_CHARS} characters (it has {chars})"));
    }
    let lower = raw.to_ascii_lowercase();
    let web = lower.starts_with("https://") || lower.starts_with("http://");
    let local = raw.starts_with('/') && !raw.starts_with("//");
    if !(raw.is_empty() || web || local) || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid(
            "picture must be a path on this site (/static/…) or an http(s):// address".to_owned(),
        );
    }
    Ok(raw.to_owned())
}

/// A stock from 0 to 1,000,000,000 inclusive.
pub(crate) fn stock(units: i64) -> Result<i64, ProductError> {
    if !(0..=MAX_STOCK).contains(&units) {
        return invalid(format!("stock must be between 0 and {MAX_STOCK}, got {units}"));
    }
    Ok(units)
}

/// A category name as shown, and its key (the lowercased name) that makes categories case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Category {
    pub name: String,
    pub key: String,
}

/// The lookup key of a category name: trimmed and lowercased (Unicode-aware, the same on every backend).
pub(crate) fn category_key(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// A product's categories: each trimmed, empty names dropped, at most 50 characters, duplicates (in any
/// case) removed keeping the first, at most 20.
pub(crate) fn categories(raw: &[String]) -> Result<Vec<Category>, ProductError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in raw.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let chars = name.chars().count();
        if chars > MAX_CATEGORY_CHARS {
            return invalid(format!(
                "category {name:?} is too long: at most {MAX_CATEGORY_CHARS} characters (it has {chars})"
            ));
        }
        let key = category_key(name);
        if seen.insert(key.clone()) {
            out.push(Category { name: name.to_owned(), key });
        }
    }
    if out.len() > MAX_CATEGORIES {
        return invalid(format!(
            "a product can have at most {MAX_CATEGORIES} categories ({} were given)",
            out.len()
        ));
    }
    Ok(out)
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    pub page: i32,
    pub page_size: i32,
}

impl Page {
    /// `page` from 1 and `page_size` 1–100; 0 in either means the default (page 1, 20 per page).
    pub fn parse(page: i32, page_size: i32) -> Result<Page, ProductError> {
        let page = match page {
            0 => 1,
            p if p < 0 => return invalid(format!("page must be 1 or more, got {p}")),
            p => p,
        };
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            s if !(1..=MAX_PAGE_SIZE).contains(&s) => {
                return invalid(format!("page_size must be between 1 and {MAX_PAGE_SIZE}, got {s}"));
            }
            s => s,
        };
        Ok(Page { page, page_size })
    }

    pub fn limit(self) -> i64 {
        i64::from(self.page_size)
    }

    pub fn offset(self) -> i64 {
        (i64::from(self.page) - 1) * i64::from(self.page_size)
    }
}

/// A search query as `LIKE` patterns (escape character `!`), one per distinct word, lowercased.
pub(crate) fn search_patterns(raw: &str) -> Result<Vec<String>, ProductError> {
    let query = raw.trim();
    if query.is_empty() {
        return invalid("query is required");
    }
    let chars = query.chars().count();
    if chars > MAX_QUERY_CHARS {
        return invalid(format!("query must be at most {MAX_QUERY_CHARS} characters (it has {chars})"));
    }
    let mut seen = HashSet::new();
    Ok(query
        .split_whitespace()
        .map(str::to_lowercase)
        .filter(|w| seen.insert(w.clone()))
        .map(|w| format!("%{}%", like_escape(&w)))
        .collect())
}

/// `s` with `LIKE`'s wildcards (`%`, `_`) and the escape character itself (`!`) escaped with `!`, for
/// `LIKE ? ESCAPE '!'` (the same on MySQL and SQLite, unlike a backslash).
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '!' | '%' | '_') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

/// The text that search matches: lowercased name and description, on separate lines (a query word
/// never holds a line break, so it cannot match across the two).
pub(crate) fn search_text(name: &str, description: &str) -> String {
    format!("{}\n{}", name.to_lowercase(), description.to_lowercase())
}

/// One product and a quantity, as reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Line {
    pub product_id: i64,
    pub quantity: i64,
}

/// Reservation lines: at least one, each of a valid product id and a quantity of at least 1, no product
/// twice. Sorted by product id (the order in which rows are locked, so concurrent reservations never
/// deadlock).
pub(crate) fn lines(raw: impl IntoIterator<Item = (i64, i64)>) -> Result<Vec<Line>, ProductError> {
    let mut lines = raw
        .into_iter()
        .map(|(product_id, quantity)| Ok(Line { product_id: ProductId::new(product_id)?.get(), quantity }))
        .collect::<Result<Vec<Line>, ProductError>>()?;
    if lines.is_empty() {
        return invalid("lines must hold at least one product");
    }
    if let Some(bad) = lines.iter().find(|l| l.quantity < 1) {
        return invalid(format!(
            "the quantity of product {} must be at least 1, got {}",
            bad.product_id, bad.quantity
        ));
    }
    lines.sort();
    if let Some(pair) = lines.windows(2).find(|w| w[0].product_id == w[1].product_id) {
        return invalid(format!("product {} appears in more than one line", pair[0].product_id));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_invalid<T: std::fmt::Debug>(r: Result<T, ProductError>) -> String {
        match r {
            Err(ProductError::InvalidArgument(msg)) => msg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn names() {
        assert_eq!(name("  Blue mug \n").unwrap(), "Blue mug");
        assert_eq!(is_invalid(name("   ")), "name is required");
        assert_eq!(name(&"é".repeat(200)).unwrap().chars().count(), 200);
        assert!(is_invalid(name(&"x".repeat(201))).contains("at most 200"));
    }

    #[test]
    fn text_fields() {
        assert_eq!(description(" as given ").unwrap(), " as given ");
        assert!(description(&"d".repeat(5000)).is_ok());
        assert!(is_invalid(description(&"d".repeat(5001))).contains("description"));
        assert!(picture(&format!("/{}", "p".repeat(999))).is_ok());
        assert!(is_invalid(picture(&format!("/{}", "p".repeat(1000)))).contains("picture"));
        for bad in ["javascript:alert(1)", "data:image/png;base64,AA", "//evil.example/x", "lamp.png", "/a b"]
        {
            assert!(is_invalid(picture(bad)).contains("http(s)://"), "{bad}");
        }
        for good in
            ["", "/static/images/products/lamp.svg", "https://cdn.example.com/l.png", "HTTP://x.example/y"]
        {
            assert_eq!(picture(good).unwrap(), good);
        }
    }

    #[test]
    fn stock_bounds() {
        assert_eq!(stock(MAX_STOCK).unwrap(), MAX_STOCK);
        is_invalid(stock(-1));
        is_invalid(stock(MAX_STOCK + 1));
    }

    #[test]
    fn category_lists() {
        let given: Vec<String> =
            [" Kitchen ", "", "  ", "kitchen", "Mugs", "KITCHEN"].into_iter().map(String::from).collect();
        let got = categories(&given).unwrap();
        assert_eq!(
            got,
            vec![
                Category { name: "Kitchen".into(), key: "kitchen".into() },
                Category { name: "Mugs".into(), key: "mugs".into() },
            ]
        );
        assert!(is_invalid(categories(&["c".repeat(51)])).contains("at most 50"));
        assert!(categories(&["c".repeat(50)]).is_ok());
        let many: Vec<String> = (0..21).map(|i| format!("c{i}")).collect();
        assert!(is_invalid(categories(&many)).contains("at most 20"));
        assert_eq!(categories(&many[..20]).unwrap().len(), 20);
        // Duplicates do not count towards the limit.
        let dupes: Vec<String> = (0..40).map(|i| format!("C{}", i % 20)).collect();
        assert_eq!(categories(&dupes).unwrap().len(), 20);
    }

    #[test]
    fn pages() {
        assert_eq!(Page::parse(0, 0).unwrap(), Page { page: 1, page_size: 20 });
        let p = Page::parse(3, 100).unwrap();
        assert_eq!((p.limit(), p.offset()), (100, 200));
        let p = Page::parse(i32::MAX, 100).unwrap();
        assert_eq!(p.offset(), (i64::from(i32::MAX) - 1) * 100);
        is_invalid(Page::parse(-1, 10));
        is_invalid(Page::parse(1, -1));
        is_invalid(Page::parse(1, 101));
        is_invalid(Page::parse(1, 1000));
    }

    #[test]
    fn search_queries() {
        assert_eq!(search_patterns("  Blue  MUG blue ").unwrap(), vec!["%blue%", "%mug%"]);
        assert_eq!(search_patterns("100%").unwrap(), vec!["%100!%%"]);
        assert_eq!(search_patterns("1_0 a!b").unwrap(), vec!["%1!_0%", "%a!!b%"]);
        assert_eq!(search_patterns(r"c:\temp").unwrap(), vec![r"%c:\temp%"]);
        assert_eq!(is_invalid(search_patterns(" \t ")), "query is required");
        assert!(search_patterns(&"q".repeat(100)).is_ok());
        assert!(is_invalid(search_patterns(&"q".repeat(101))).contains("at most 100"));
    }

    #[test]
    fn search_text_is_lowercase_per_field() {
        assert_eq!(search_text("ÄPFEL Tea", "Fresh\nMINT"), "äpfel tea\nfresh\nmint");
    }

    #[test]
    fn reservation_lines() {
        let got = lines([(3, 1), (1, 2)]).unwrap();
        assert_eq!(got, vec![Line { product_id: 1, quantity: 2 }, Line { product_id: 3, quantity: 1 }]);
        assert!(is_invalid(lines([])).contains("at least one"));
        assert!(is_invalid(lines([(1, 0)])).contains("at least 1"));
        assert!(is_invalid(lines([(1, -5)])).contains("at least 1"));
        assert!(is_invalid(lines([(2, 1), (1, 1), (2, 3)])).contains("product 2 appears"));
        assert_eq!(is_invalid(lines([(1, 1), (0, 1)])), "product_id must be positive, got 0");
    }
}
