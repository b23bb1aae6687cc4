//! The operation mix of a bench run, parsed from `deposit=40,withdraw=40,transfer=20`.

use std::str::FromStr;

use rand::Rng;

use crate::ledger::types::OperationType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    deposit: u32,
    withdraw: u32,
    transfer: u32,
}

impl Mix {
    pub fn pick(&self, rng: &mut impl Rng) -> OperationType {
        let roll = rng.random_range(0..self.deposit + self.withdraw + self.transfer);
        if roll < self.deposit {
            OperationType::Deposit
        } else if roll < self.deposit + self.withdraw {
            OperationType::Withdraw
        } else {
            OperationType::Transfer
        }
    }

    pub fn has_transfers(&self) -> bool {
        self.transfer > 0
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix {
            deposit: 0,
            withdraw: 0,
            transfer: 0,
        };
        for part in text.split(',').filter(|part| !part.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name} is not a whole number"))?;
            match name.trim() {
                "deposit" => mix.deposit = weight,
                "withdraw" => mix.withdraw = weight,
                "transfer" => mix.transfer = weight,
                other => {
                    return Err(format!(
                        "unknown operation `{other}` (deposit, withdraw, transfer)"
                    ))
                }
            }
        }
        if mix.deposit + mix.withdraw + mix.transfer == 0 {
            return Err("the weights add up to zero".to_owned());
        }
        Ok(mix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weights() {
        let mix: Mix = "deposit=40,withdraw=40,transfer=20".parse().unwrap();
        assert!(mix.has_transfers());
        let only: Mix = "deposit=1".parse().unwrap();
        let mut rng = rand::rng();
        assert!((0..100).all(|_| only.pick(&mut rng) == OperationType::Deposit));
        assert!("deposit=x".parse::<Mix>().is_err());
        assert!("steal=1".parse::<Mix>().is_err());
        assert!("deposit=0".parse::<Mix>().is_err());
    }
}
