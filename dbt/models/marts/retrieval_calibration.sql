-- Is retrieval's p(BREAK) calibrated? Reliability bins (equal width on [0, 1], non-empty bins only,
-- as spymaster_assets.lib.metrics.reliability_table) of p(BREAK) against the observed BREAK rate,
-- pooled (level_kind = 'ALL') and per level kind; each row also carries its scope's Brier score of
-- retrieval vs the partition base rate it shrinks to (skill > 0: retrieval beats the base rate).
{%- set bins = var('reliability_bins') %}

with predictions as (
    select level_kind, p_break, base_break, is_break
    from {{ ref('stg_retrieval_predictions') }}
),

scoped as (
    select 'ALL' as level_kind, p_break, base_break, is_break from predictions
    union all
    select level_kind, p_break, base_break, is_break from predictions
),

binned as (
    select
        *,
        -- p = 1.0 belongs to the last bin, not an extra one
        least(floor(greatest(least(p_break, 1.0), 0.0) * {{ bins }})::integer, {{ bins - 1 }}) as bin
    from scoped
),

scope_scores as (
    select
        level_kind,
        count(*) as scope_predictions,
        avg(is_break) as scope_break_rate,
        avg(power(p_break - is_break, 2)) as brier_retrieval,
        avg(power(base_break - is_break, 2)) as brier_base
    from scoped
    group by 1
),

reliability as (
    select
        level_kind,
        bin,
        count(*) as predictions,
        avg(p_break) as mean_p_break,
        avg(is_break) as observed_break_rate
    from binned
    group by 1, 2
)

select
    reliability.level_kind || '_' || reliability.bin as calibration_id,
    reliability.level_kind,
    reliability.bin,
    reliability.bin::double / {{ bins }} as bin_lower,
    (reliability.bin + 1)::double / {{ bins }} as bin_upper,
    reliability.predictions,
    reliability.mean_p_break,
    reliability.observed_break_rate,
    reliability.mean_p_break - reliability.observed_break_rate as calibration_gap,
    scope_scores.scope_predictions,
    scope_scores.scope_break_rate,
    scope_scores.brier_retrieval,
    scope_scores.brier_base,
    1 - scope_scores.brier_retrieval / nullif(scope_scores.brier_base, 0) as brier_skill
from reliability
join scope_scores using (level_kind)
order by reliability.level_kind = 'ALL' desc, reliability.level_kind, reliability.bin
