//! What the serving evaluator thinks of the lists `serve` sends, for the operators'
//! quality metrics: the expected clicks of the served list against the upstream order
//! (sampled, every `batching.quality_every`-th batch), and the cost of exploration (the
//! model's list against the exploration list that replaced it, on every exploration
//! list). True clicks are not observable at serving time; these are the evaluator's
//! estimates, with the evaluator's blind spots (`eglr audit` checks them against
//! logged clicks).

use candle_core::Device;

use crate::model::{click_probabilities, Bundle, Decoded, PoolTensors};
use crate::schema::RerankRequest;

/// One request's two lists to compare (candidate indices, top first).
#[derive(Debug)]
pub struct Pair<'a> {
    pub request: &'a RerankRequest,
    pub first: Vec<usize>,
    pub second: Vec<usize>,
}

/// Expected clicks per list by the bundle's evaluator (its click probabilities summed
/// over the list's positions), for the first and second list of each pair.
pub fn expected_clicks(
    bundle: &Bundle,
    pairs: &[Pair<'_>],
    device: &Device,
) -> candle_core::Result<Vec<(f64, f64)>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let pools: Vec<_> = pairs
        .iter()
        .map(|p| (&p.request.user, p.request.candidates.as_slice()))
        .collect();
    let tensors = PoolTensors::new(&bundle.encoder.encode(&pools), &bundle.encoder, device)?;
    let clicks = |lists: Vec<Vec<usize>>| -> candle_core::Result<Vec<f64>> {
        let probabilities = click_probabilities(
            &bundle.evaluator,
            &tensors,
            &Decoded::from_orders(lists.into_iter()),
        )?;
        Ok(probabilities
            .iter()
            .map(|list| list.iter().map(|&p| f64::from(p)).sum())
            .collect())
    };
    let first = clicks(pairs.iter().map(|p| p.first.clone()).collect())?;
    let second = clicks(pairs.iter().map(|p| p.second.clone()).collect())?;
    Ok(first.into_iter().zip(second).collect())
}

/// The candidate indices of `items` in `request`'s pool (ids not in the pool are
/// skipped: the model and the policies only ever choose from it).
pub fn order_of<'a>(
    request: &RerankRequest,
    items: impl IntoIterator<Item = &'a crate::schema::Token>,
) -> Vec<usize> {
    let index: std::collections::HashMap<&crate::schema::Token, usize> = request
        .candidates
        .iter()
        .enumerate()
        .map(|(j, c)| (&c.item_id, j))
        .collect();
    items
        .into_iter()
        .filter_map(|id| index.get(id).copied())
        .collect()
}

/// The upstream order of `request`: its first `list_len` candidates as sent.
pub fn upstream_order(request: &RerankRequest) -> Vec<usize> {
    (0..request.list_len.min(request.candidates.len())).collect()
}
