//! Exact money: currencies with their minor units and validated amounts.
//!
//! Amounts arrive as decimal text from clients and from the topic. They are parsed here with
//! a strict grammar and hard bounds, so no input can allocate without limit, round through a
//! float, or reach the rules as a non-positive value.

use std::fmt;
use std::str::FromStr;

use bigdecimal::num_bigint::BigInt;
use bigdecimal::{BigDecimal, Zero};
use serde::{Deserialize, Serialize};

/// The most significant digits an amount may have. Anything longer is a typo or an attack.
pub const AMOUNT_DIGITS_MAX: usize = 30;
/// The most decimal places any currency uses; also the bound on a parsed scale.
pub const AMOUNT_SCALE_MAX: i64 = 8;
/// The largest exponent accepted in JSON number notation (`1.5e3`).
const EXPONENT_ABS_MAX: i64 = 40;

/// A currency this ledger supports, with the decimal places its amounts may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u8,
}

const CURRENCIES: &[(&str, u8)] = &[
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("CAD", 2),
    ("AUD", 2),
    ("CNY", 2),
    ("INR", 2),
    ("RUB", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("BHD", 3),
    ("BTC", 8),
];

impl Currency {
    pub const USD: Currency = Currency {
        code: "USD",
        minor_units: 2,
    };

    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == text)
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or_else(|| MoneyError::UnsupportedCurrency(text.chars().take(16).collect()))
    }

    /// Every supported currency, in a stable order.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .map(|&(code, minor_units)| Currency { code, minor_units })
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn minor_units(&self) -> u8 {
        self.minor_units
    }

    /// Renders a value with the currency's decimal places (`12.50`), never dropping digits.
    pub fn format(&self, value: &BigDecimal) -> String {
        let scale = value
            .fractional_digit_count()
            .max(i64::from(self.minor_units));
        value.with_scale(scale).to_plain_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency {0:?} is not supported")]
    UnsupportedCurrency(String),
    #[error("amount is not a decimal number: {0}")]
    Malformed(&'static str),
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount has more than {AMOUNT_DIGITS_MAX} significant digits")]
    TooLarge,
    #[error("amount has {scale} decimal places; {currency} allows {allowed}")]
    TooPrecise {
        scale: i64,
        currency: &'static str,
        allowed: u8,
    },
    #[error("amount has {0} decimal places; no currency allows more than {AMOUNT_SCALE_MAX}")]
    TooManyDecimals(i64),
}

impl MoneyError {
    /// The message about `field` (whose value was parsed as an amount) rather than `amount`.
    pub fn about(&self, field: &str) -> String {
        let message = self.to_string();
        match message.strip_prefix("amount") {
            Some(rest) => format!("{field}{rest}"),
            None => message,
        }
    }
}

/// A positive amount of money with at most [`AMOUNT_DIGITS_MAX`] digits and
/// [`AMOUNT_SCALE_MAX`] decimal places. Whether it fits a particular currency is checked by
/// [`Amount::check_currency`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Amount(BigDecimal);

impl Amount {
    /// Parses decimal text: digits, an optional fraction, and (for JSON numbers) an optional
    /// exponent. Signs, whitespace, `NaN`, infinities and hex are all rejected.
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let value = parse_decimal(text)?;
        Self::from_decimal(value)
    }

    pub fn from_decimal(value: BigDecimal) -> Result<Self, MoneyError> {
        let value = value.normalized();
        if value <= BigDecimal::zero() {
            return Err(MoneyError::NotPositive);
        }
        let (digits, exponent) = value.as_bigint_and_exponent();
        let scale = exponent.max(0);
        if scale > AMOUNT_SCALE_MAX {
            return Err(MoneyError::TooManyDecimals(scale));
        }
        // A negative exponent stands for trailing zeros: 1e40 has 41 integer digits.
        let integer_digits = (digits.to_string().len() as i64 - exponent).max(0);
        if integer_digits + scale > AMOUNT_DIGITS_MAX as i64 {
            return Err(MoneyError::TooLarge);
        }
        Ok(Amount(value))
    }

    pub fn check_currency(&self, currency: Currency) -> Result<(), MoneyError> {
        let scale = self.0.fractional_digit_count().max(0);
        if scale > i64::from(currency.minor_units) {
            return Err(MoneyError::TooPrecise {
                scale,
                currency: currency.code,
                allowed: currency.minor_units,
            });
        }
        Ok(())
    }

    pub fn value(&self) -> &BigDecimal {
        &self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_plain_string())
    }
}

/// A wallet's overdraft limit: zero, or a positive amount with the grammar and bounds of
/// [`Amount::parse`] and no more decimals than `currency` allows.
pub fn overdraft_limit(text: &str, currency: Currency) -> Result<BigDecimal, MoneyError> {
    let value = parse_decimal(text)?;
    if value.is_zero() {
        return Ok(BigDecimal::zero());
    }
    let limit = Amount::from_decimal(value)?;
    limit.check_currency(currency)?;
    Ok(limit.0)
}

/// Renders a balance the way clients see it: plain notation, no exponent, no trailing zeros
/// beyond what the value needs.
pub fn format_decimal(value: &BigDecimal) -> String {
    let normalized = value.normalized();
    if normalized.fractional_digit_count() < 0 {
        normalized.with_scale(0).to_plain_string()
    } else {
        normalized.to_plain_string()
    }
}

/// Renders an amount in its wallet's currency, or as [`format_decimal`] does when the wallet
/// (and so its currency) is not known.
pub fn format_in(currency: Option<Currency>, value: &BigDecimal) -> String {
    match currency {
        Some(currency) => currency.format(value),
        None => format_decimal(value),
    }
}

/// Reads decimal text stored by PostgreSQL (`numeric::text`), which is always plain notation.
pub fn decimal_from_db(text: &str) -> Result<BigDecimal, MoneyError> {
    BigDecimal::from_str(text).map_err(|_| MoneyError::Malformed("not a decimal"))
}

fn parse_decimal(text: &str) -> Result<BigDecimal, MoneyError> {
    // A minus sign is a wish for a negative (or negative zero) amount, which the client
    // should be told it cannot have, rather than that its digits are malformed.
    if text.starts_with('-') {
        return Err(MoneyError::NotPositive);
    }
    if text.starts_with('+') {
        return Err(MoneyError::Malformed("a sign is not allowed"));
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let (integer, fraction) = match mantissa.split_once('.') {
        Some((integer, fraction)) => (integer, fraction),
        None => (mantissa, ""),
    };
    if integer.is_empty() || !integer.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MoneyError::Malformed(
            "expected digits before the decimal point",
        ));
    }
    if mantissa.contains('.') && fraction.is_empty() {
        return Err(MoneyError::Malformed(
            "expected digits after the decimal point",
        ));
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MoneyError::Malformed(
            "unexpected character in the fraction",
        ));
    }
    let integer = integer.trim_start_matches('0');
    let fraction_trimmed = fraction.trim_end_matches('0');
    if integer.len() + fraction_trimmed.len() > AMOUNT_DIGITS_MAX + 1 {
        return Err(MoneyError::TooLarge);
    }
    let exponent = match exponent {
        None => 0,
        Some(text) => parse_exponent(text)?,
    };
    let digits = format!("{integer}{fraction_trimmed}");
    let digits = if digits.is_empty() { "0" } else { &digits };
    let mantissa = BigInt::from_str(digits).map_err(|_| MoneyError::Malformed("bad digits"))?;
    let scale = fraction_trimmed.len() as i64 - exponent;
    Ok(BigDecimal::new(mantissa, scale))
}

fn parse_exponent(text: &str) -> Result<i64, MoneyError> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MoneyError::Malformed("bad exponent"));
    }
    let magnitude: i64 = digits
        .parse()
        .map_err(|_| MoneyError::Malformed("bad exponent"))?;
    if magnitude > EXPONENT_ABS_MAX {
        return Err(MoneyError::Malformed("exponent out of range"));
    }
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_amounts_parse_exactly() {
        assert_eq!(Amount::parse("10.50").unwrap().to_string(), "10.5");
        assert_eq!(Amount::parse("0.01").unwrap().to_string(), "0.01");
        assert_eq!(Amount::parse("007").unwrap().to_string(), "7");
        assert_eq!(Amount::parse("1e2").unwrap().to_string(), "100");
        assert_eq!(Amount::parse("1.25E-1").unwrap().to_string(), "0.125");
    }

    #[test]
    fn hostile_amounts_are_rejected() {
        for text in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "NaN",
            "inf",
            "0x10",
            "1.",
            ".5",
            "1e",
            "1e99999999999",
            "1e41",
            "1,5",
            "１",
            "0",
            "0.000",
            "-0",
        ] {
            assert!(Amount::parse(text).is_err(), "{text:?} must be rejected");
        }
        assert_eq!(
            Amount::parse(&"9".repeat(1_000_000)),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(Amount::parse("1e40"), Err(MoneyError::TooLarge));
        assert_eq!(Amount::parse("1e30"), Err(MoneyError::TooLarge));
        assert!(Amount::parse("1e29").is_ok());
        assert_eq!(
            Amount::parse("0.000000001"),
            Err(MoneyError::TooManyDecimals(9))
        );
    }

    /// A sign or too many decimals is named for what it is, and for the field it was in.
    #[test]
    fn refusals_say_what_is_wrong() {
        for text in ["-1", "-0", "-0.00", "-1e2"] {
            assert_eq!(Amount::parse(text), Err(MoneyError::NotPositive), "{text}");
        }
        assert_eq!(
            Amount::parse("+5").map_err(|error| error.to_string()),
            Err("amount is not a decimal number: a sign is not allowed".to_owned())
        );
        assert_eq!(
            Amount::parse("1.0000000000000000000001").map_err(|error| error.to_string()),
            Err("amount has 22 decimal places; no currency allows more than 8".to_owned())
        );
        assert_eq!(
            overdraft_limit("abc", Currency::USD).map_err(|error| error.about("overdraftLimit")),
            Err(
                "overdraftLimit is not a decimal number: expected digits before the decimal point"
                    .to_owned()
            )
        );
    }

    #[test]
    fn currency_limits_decimal_places() {
        let amount = Amount::parse("1.005").unwrap();
        assert!(amount.check_currency(Currency::USD).is_err());
        assert!(amount
            .check_currency(Currency::parse("KWD").unwrap())
            .is_ok());
        assert!(Amount::parse("1.10")
            .unwrap()
            .check_currency(Currency::USD)
            .is_ok());
        assert!(Currency::parse("usd").is_err());
    }

    #[test]
    fn overdraft_limits_are_zero_or_amounts_of_the_currency() {
        assert_eq!(overdraft_limit("0", Currency::USD), Ok(BigDecimal::zero()));
        assert_eq!(
            overdraft_limit("0.00", Currency::USD),
            Ok(BigDecimal::zero())
        );
        assert_eq!(
            overdraft_limit("250.50", Currency::USD).map(|limit| format_decimal(&limit)),
            Ok("250.5".to_owned())
        );
        for text in ["-1", "", "1.005", "abc", "1e41"] {
            assert!(
                overdraft_limit(text, Currency::USD).is_err(),
                "{text:?} must be rejected"
            );
        }
        let jpy = Currency::parse("JPY").unwrap();
        assert!(overdraft_limit("1.5", jpy).is_err());
    }

    #[test]
    fn balances_render_without_exponents() {
        let value = BigDecimal::from_str("1E+3").unwrap();
        assert_eq!(format_decimal(&value), "1000");
        assert_eq!(format_decimal(&BigDecimal::from(0)), "0");
        assert_eq!(
            format_decimal(&BigDecimal::from_str("12.500").unwrap()),
            "12.5"
        );
    }
}
