//! The demo catalog that `mall up` starts with: five categories, thirty products.

use mall_storage::Db;

use crate::ProductError;
use crate::input;
use crate::store::{self, NewProduct};

/// (name, description, price in cents, stock, categories)
type DemoProduct = (&'static str, &'static str, i64, i64, &'static [&'static str]);

const KITCHEN: &str = "Kitchen";
const APPAREL: &str = "Apparel";
const BOOKS: &str = "Books";
const ELECTRONICS: &str = "Electronics";
const OUTDOORS: &str = "Outdoors";

const PRODUCTS: &[DemoProduct] = &[
    (
        "Blue Stoneware Mug",
        "A 350 ml mug glazed in deep cobalt blue. Dishwasher and microwave safe.",
        1290,
        120,
        &[KITCHEN],
    ),
    (
        "Cast Iron Skillet 26 cm",
        "Pre-seasoned cast iron pan that goes from the stove to the oven to the campfire.",
        3490,
        45,
        &[KITCHEN, OUTDOORS],
    ),
    (
        "Chef's Knife 20 cm",
        "Forged stainless steel blade with a full tang and a beech wood handle.",
        5900,
        60,
        &[KITCHEN],
    ),
    (
        "Bamboo Cutting Board",
        "Large reversible board with a juice groove on one side. 45 x 30 cm.",
        2450,
        80,
        &[KITCHEN],
    ),
    (
        "Pour-Over Coffee Set",
        "Glass carafe, ceramic dripper and 100 paper filters for two to four cups.",
        3900,
        50,
        &[KITCHEN],
    ),
    (
        "Linen Tea Towels (Set of 3)",
        "Stonewashed pure linen in oat, sage and charcoal. They get softer with every wash.",
        1850,
        150,
        &[KITCHEN],
    ),
    (
        "Organic Cotton T-Shirt",
        "Classic crew neck in 180 g organic cotton. Available in navy; true to size.",
        1999,
        200,
        &[APPAREL],
    ),
    (
        "Merino Wool Beanie",
        "A warm, itch-free beanie knitted from fine merino wool. One size.",
        2499,
        90,
        &[APPAREL, OUTDOORS],
    ),
    (
        "Waxed Canvas Tote",
        "Water-resistant waxed canvas with leather handles and an inside zip pocket.",
        4500,
        40,
        &[APPAREL],
    ),
    (
        "Rain Jacket",
        "Lightweight, packable shell with taped seams and an adjustable hood.",
        8900,
        35,
        &[APPAREL, OUTDOORS],
    ),
    (
        "Hiking Socks (2 Pairs)",
        "Cushioned merino blend socks that keep feet dry on long trails.",
        1600,
        180,
        &[APPAREL, OUTDOORS],
    ),
    (
        "Denim Work Shirt",
        "Sturdy 8 oz denim with two chest pockets and mother-of-pearl snaps.",
        5490,
        55,
        &[APPAREL],
    ),
    (
        "The Pragmatic Gardener",
        "A practical guide to growing vegetables in small spaces, season by season.",
        2295,
        70,
        &[BOOKS, OUTDOORS],
    ),
    (
        "Bread Baking Basics",
        "From your first sourdough starter to a crusty country loaf, with step-by-step photos.",
        2750,
        65,
        &[BOOKS, KITCHEN],
    ),
    (
        "A Short History of Maps",
        "How people drew the world, from clay tablets to satellite images. Hardcover, 320 pages.",
        3100,
        30,
        &[BOOKS],
    ),
    (
        "Learning Rust, Second Edition",
        "A hands-on introduction to systems programming with Rust, updated for the 2024 edition.",
        4499,
        85,
        &[BOOKS],
    ),
    (
        "Night Sky Field Guide",
        "Star charts for every month, planets, meteor showers and what to see with binoculars.",
        1995,
        60,
        &[BOOKS, OUTDOORS],
    ),
    (
        "Poems for Rainy Days",
        "An anthology of short poems to read aloud, chosen for grey afternoons.",
        1450,
        40,
        &[BOOKS],
    ),
    (
        "Wireless Noise-Cancelling Headphones",
        "Over-ear headphones with 30 hours of battery life and a foldable design.",
        17900,
        25,
        &[ELECTRONICS],
    ),
    (
        "USB-C Charger 65 W",
        "Compact gallium nitride charger with two USB-C ports and one USB-A port.",
        3999,
        140,
        &[ELECTRONICS],
    ),
    (
        "Mechanical Keyboard",
        "Tenkeyless keyboard with hot-swappable tactile switches and a detachable cable.",
        9900,
        30,
        &[ELECTRONICS],
    ),
    (
        "Portable Bluetooth Speaker",
        "Waterproof speaker with 12 hours of playback; floats if you drop it in the pool.",
        5990,
        75,
        &[ELECTRONICS, OUTDOORS],
    ),
    (
        "E-Reader with Front Light",
        "Glare-free 6 inch screen, weeks of battery life and room for thousands of books.",
        11900,
        20,
        &[ELECTRONICS, BOOKS],
    ),
    (
        "Smart LED Desk Lamp",
        "Dimmable lamp with adjustable colour temperature and a USB charging port in the base.",
        4990,
        60,
        &[ELECTRONICS],
    ),
    (
        "Digital Kitchen Scale",
        "Weighs up to 5 kg in 1 g steps, with a tare button and a stainless steel platform.",
        1990,
        110,
        &[ELECTRONICS, KITCHEN],
    ),
    (
        "Two-Person Dome Tent",
        "Freestanding three-season tent that pitches in five minutes. Weighs 2.1 kg.",
        14900,
        20,
        &[OUTDOORS],
    ),
    (
        "Insulated Water Bottle 750 ml",
        "Double-walled stainless steel keeps drinks cold for 24 hours or hot for 12.",
        2790,
        160,
        &[OUTDOORS, KITCHEN],
    ),
    (
        "Headlamp 400 Lumen",
        "Rechargeable headlamp with a red night mode and a tilting beam.",
        3290,
        95,
        &[OUTDOORS, ELECTRONICS],
    ),
    (
        "Folding Camp Chair",
        "Aluminium frame, breathable mesh seat and a cup holder. Folds into its own bag.",
        3990,
        50,
        &[OUTDOORS],
    ),
    (
        "Trail Running Backpack 12 L",
        "A close-fitting vest pack with two soft flasks and room for a jacket.",
        7490,
        35,
        &[OUTDOORS, APPAREL],
    ),
];

/// The demo products, validated like any other input.
fn products() -> Result<Vec<NewProduct>, ProductError> {
    PRODUCTS
        .iter()
        .map(|&(name, description, price_cents, stock, categories)| {
            let categories: Vec<String> = categories.iter().map(|c| (*c).to_owned()).collect();
            Ok(NewProduct {
                name: input::name(name)?,
                description: input::description(description)?,
                picture: input::picture(&picture(name))?,
                price_cents: mall_domain::Cents::new(price_cents)?,
                stock: input::stock(stock)?,
                categories: input::categories(&categories)?,
            })
        })
        .collect()
}

/// The demo product's picture: an SVG illustration that the storefront ships under its slug.
/// (Migration 0002 moved rows seeded with the earlier `.jpg` names to these.)
fn picture(name: &str) -> String {
    format!("/static/images/products/{}.svg", slug(name))
}

/// `"Chef's Knife 20 cm"` → `"chefs-knife-20-cm"`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if (c.is_whitespace() || c == '-') && !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Fills an empty catalog with the demo products (in one transaction) and returns true; leaves a
/// catalog that has ever had a product alone and returns false. Calling it again never duplicates.
pub async fn load_demo_catalog(db: &Db) -> Result<bool, ProductError> {
    let inserted = store::seed(db, "demo", &products()?).await?;
    if inserted {
        tracing::info!(products = PRODUCTS.len(), "demo catalog loaded");
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn demo_data_is_valid() {
        let products = products().expect("valid demo data");
        assert_eq!(products.len(), 30);
        let names: HashSet<&str> = products.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), products.len(), "names are unique");
        let categories: HashSet<&str> =
            products.iter().flat_map(|p| p.categories.iter().map(|c| c.name.as_str())).collect();
        assert_eq!(categories.len(), 5);
        assert!(products.iter().all(|p| (20..=200).contains(&p.stock)));
        assert!(products.iter().all(|p| p.price_cents.get() > 0));
    }

    #[test]
    fn pictures_are_svgs_named_by_slug() {
        let products = products().expect("valid demo data");
        for product in &products {
            assert_eq!(
                product.picture,
                format!("/static/images/products/{}.svg", slug(&product.name)),
                "{}",
                product.name
            );
        }
        assert_eq!(products[0].picture, "/static/images/products/blue-stoneware-mug.svg");
        let pictures: HashSet<&str> = products.iter().map(|p| p.picture.as_str()).collect();
        assert_eq!(pictures.len(), products.len(), "one picture per product");
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Chef's Knife 20 cm"), "chefs-knife-20-cm");
        assert_eq!(slug("Linen Tea Towels (Set of 3)"), "linen-tea-towels-set-of-3");
        assert_eq!(slug("USB-C Charger 65 W"), "usb-c-charger-65-w");
    }
}
