//! RFC 2782 target selection: the order in which a client tries the targets of one SRV
//! answer. Pure: the random numbers come from the caller so tests can fix them.

use super::rfc3263::Srv;

/// Orders SRV records the way RFC 2782 ("Usage rules" and the Weight field) says a client
/// tries them: lowest priority first; within one priority, repeatedly pick a record at
/// random with probability proportional to its weight, zero-weight records having a small
/// chance of being first.
pub(super) fn order_by_priority_and_weight(mut records: Vec<Srv>, random: &mut impl FnMut() -> u32) -> Vec<Srv> {
    // A stable sort keeps the answer's order within a priority, so the draw below is a
    // function of the answer and the random numbers only.
    records.sort_by_key(|record| record.priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same_priority = rest.iter().take_while(|r| r.priority == first.priority).count();
        let (group, tail) = rest.split_at(same_priority);
        ordered.extend(order_by_weight(group.to_vec(), random));
        rest = tail;
    }
    ordered
}

/// The selection loop of RFC 2782 for one priority: zero weights first, running sums, a
/// uniform number in `0..=sum`, take the first record whose running sum reaches it.
fn order_by_weight(mut group: Vec<Srv>, random: &mut impl FnMut() -> u32) -> Vec<Srv> {
    // "all those with weight 0 are placed at the beginning of the list"
    group.sort_by_key(|record| record.weight != 0);
    let mut ordered = Vec::with_capacity(group.len());
    while !group.is_empty() {
        let sum: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
        let pick = u64::from(random()) % (sum + 1);
        let mut running = 0u64;
        let mut chosen = group.len() - 1;
        for (index, record) in group.iter().enumerate() {
            running += u64::from(record.weight);
            if running >= pick {
                chosen = index;
                break;
            }
        }
        ordered.push(group.remove(chosen));
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv { priority, weight, port: 5060, target: target.into() }
    }

    fn targets(records: &[Srv]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    fn fixed(values: &[u32]) -> impl FnMut() -> u32 + '_ {
        let mut next = values.iter().copied().cycle();
        move || next.next().unwrap_or(0)
    }

    #[test]
    fn lower_priority_comes_first_whatever_the_weights() {
        let records = vec![srv(20, 100, "backup."), srv(10, 0, "primary."), srv(30, 65535, "last.")];
        let ordered = order_by_priority_and_weight(records, &mut fixed(&[12345]));
        assert_eq!(targets(&ordered), ["primary.", "backup.", "last."]);
    }

    #[test]
    fn weight_draw_picks_first_running_sum_reaching_the_number() {
        // Weights 10 and 30: running sums 10, 40. Draw 11 % 41 = 11 > 10 picks b first.
        let records = vec![srv(1, 10, "a."), srv(1, 30, "b.")];
        assert_eq!(targets(&order_by_priority_and_weight(records.clone(), &mut fixed(&[11]))), ["b.", "a."]);
        // Draw 10 reaches a's running sum exactly: a first.
        assert_eq!(targets(&order_by_priority_and_weight(records.clone(), &mut fixed(&[10]))), ["a.", "b."]);
        // The number is taken modulo sum + 1: 41 % 41 = 0 picks a.
        assert_eq!(targets(&order_by_priority_and_weight(records, &mut fixed(&[41]))), ["a.", "b."]);
    }

    #[test]
    fn zero_weight_is_placed_first_and_wins_only_a_zero_draw() {
        let records = vec![srv(1, 50, "heavy."), srv(1, 0, "zero.")];
        assert_eq!(targets(&order_by_priority_and_weight(records.clone(), &mut fixed(&[0]))), ["zero.", "heavy."]);
        assert_eq!(targets(&order_by_priority_and_weight(records, &mut fixed(&[1]))), ["heavy.", "zero."]);
    }

    #[test]
    fn weights_share_first_place_in_proportion() {
        // Over every draw 0..=40 (sum 40), b (weight 30) is first 30 times, a 11 times
        // (0..=10 reach a's running sum 10).
        let records = vec![srv(1, 10, "a."), srv(1, 30, "b.")];
        let mut b_first = 0;
        for draw in 0..=40 {
            if order_by_priority_and_weight(records.clone(), &mut fixed(&[draw]))[0].target == "b." {
                b_first += 1;
            }
        }
        assert_eq!(b_first, 30);
    }

    #[test]
    fn every_record_is_kept_once() {
        let records: Vec<Srv> = (0..20).map(|i| srv(i % 3, i * 7, &format!("t{i}."))).collect();
        let mut seed = 7u32;
        let mut lcg = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            seed
        };
        let ordered = order_by_priority_and_weight(records.clone(), &mut lcg);
        assert_eq!(ordered.len(), records.len());
        let mut names = targets(&ordered);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), records.len());
        assert!(ordered.windows(2).all(|w| w[0].priority <= w[1].priority));
    }
}
