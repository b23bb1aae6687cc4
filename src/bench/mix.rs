//! The operation mix of a bench run, parsed from `deposit=40,withdraw=40,transfer=20` (and
//! `hold`, `capture`, `void` weights for runs with holds).

use std::str::FromStr;

use rand::Rng;

use crate::ledger::types::OperationType;

/// A weight per kind a client may submit, in [`OperationType::ALL`]'s order (EXPIRE, which
/// only the worker makes, always weighs 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; OperationType::ALL.len()],
}

impl Mix {
    pub fn pick(&self, rng: &mut impl Rng) -> OperationType {
        let mut roll = rng.random_range(0..self.weights.iter().sum::<u32>());
        for (kind, weight) in OperationType::ALL.into_iter().zip(self.weights) {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        // The roll is below the sum of the weights, which parsing keeps above zero.
        OperationType::Deposit
    }

    pub fn has_transfers(&self) -> bool {
        OperationType::ALL
            .into_iter()
            .zip(self.weights)
            .any(|(kind, weight)| kind == OperationType::Transfer && weight > 0)
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix {
            weights: [0; OperationType::ALL.len()],
        };
        for part in text.split(',').filter(|part| !part.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name} is not a whole number"))?;
            let name = name.trim();
            let position = OperationType::ALL
                .iter()
                .position(|kind| kind.submittable() && kind.as_str().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    let names = OperationType::listed(OperationType::submittable_kinds());
                    format!("unknown operation `{name}` ({})", names.to_lowercase())
                })?;
            mix.weights[position] = weight;
        }
        if mix.weights.iter().sum::<u32>() == 0 {
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
        let holds: Mix = "hold=1,capture=1,void=1".parse().unwrap();
        assert!(!holds.has_transfers());
        assert!((0..100).all(|_| matches!(
            holds.pick(&mut rng),
            OperationType::Hold | OperationType::Capture | OperationType::Void
        )));
        assert!("deposit=x".parse::<Mix>().is_err());
        assert!("steal=1".parse::<Mix>().is_err());
        assert!("expire=1".parse::<Mix>().is_err());
        assert!("deposit=0".parse::<Mix>().is_err());
    }
}
