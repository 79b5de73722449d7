-- Per session × touched level kind: the level's value(s), how often price touched it, and what
-- happened next at the primary (4-min) horizon. Levels that were never touched have no row.
with events as (
    select * from {{ ref('stg_events') }}
),

labels as (
    select * from {{ ref('stg_labels') }}
),

front_month as (
    select session, symbol as front_month, dominance as front_month_dominance, roll_contaminated
    from {{ ref('stg_front_month') }}
    where is_front
),

-- The values a level takes in the RTH analysis window [09:30, 12:30] ET: the value in force at the
-- open plus every update up to 12:30 (one value for PM/OR levels, one per 2-min close for SMA/EMA).
levels as (
    select
        session,
        level_kind,
        price,
        known_at_et,
        known_at_et <= session + interval '9 hours 30 minutes'
            and known_at_et = max(known_at_et) filter (where known_at_et <= session + interval '9 hours 30 minutes')
                over (partition by session, level_kind) as in_force_at_open,
        known_at_et > session + interval '9 hours 30 minutes'
            and known_at_et <= session + interval '12 hours 30 minutes' as updated_in_window
    from {{ ref('stg_levels') }}
),

level_values as (
    select
        session,
        level_kind,
        min(price) as level_price_min,
        max(price) as level_price_max,
        count(*) as level_values
    from levels
    where in_force_at_open or updated_in_window
    group by 1, 2
),

touches as (
    select
        events.session,
        events.level_kind,
        count(*) as touches,
        count(*) filter (where events.direction = 'UP') as touches_up,
        count(*) filter (where events.direction = 'DOWN') as touches_down,
        count(labels.label_4m) as labelled,
        count(*) filter (where labels.label_4m = 'BREAK') as breaks,
        count(*) filter (where labels.label_4m = 'REJECT') as rejects,
        count(*) filter (where labels.label_4m = 'CHOP') as chops,
        avg(labels.mfe_atr_4m) as mean_mfe_atr,
        avg(labels.mae_atr_4m) as mean_mae_atr,
        avg(labels.time_to_barrier_s_4m) as mean_time_to_barrier_s,
        arg_min(events.level_price, events.ts_ns) as level_price_at_first_touch,
        min(events.ts_ns) as first_touch_ns
    from events
    left join labels on labels.event_id = events.event_id
    group by 1, 2
)

select
    touches.session || '_' || touches.level_kind as level_day_id,
    touches.session,
    touches.level_kind,
    front_month.front_month,
    front_month.front_month_dominance,
    front_month.roll_contaminated,
    touches.level_price_at_first_touch,
    level_values.level_price_min,
    level_values.level_price_max,
    level_values.level_values,
    touches.touches,
    touches.touches_up,
    touches.touches_down,
    touches.labelled,
    touches.breaks,
    touches.rejects,
    touches.chops,
    touches.breaks::double / nullif(touches.labelled, 0) as break_share,
    touches.rejects::double / nullif(touches.labelled, 0) as reject_share,
    touches.chops::double / nullif(touches.labelled, 0) as chop_share,
    touches.mean_mfe_atr,
    touches.mean_mae_atr,
    touches.mean_time_to_barrier_s,
    {{ ns_to_et('touches.first_touch_ns') }} as first_touch_et,
    cast({{ ns_to_et('touches.first_touch_ns') }} as time) as first_touch_time_et
from touches
left join level_values
    on level_values.session = touches.session and level_values.level_kind = touches.level_kind
left join front_month
    on front_month.session = touches.session
order by touches.session, touches.level_kind
