-- Walk-forward performance of the as-of break model, one fold per test session: the session's decisive
-- episodes scored by p(BREAK | decisive) of the model as of that session, against the decisive base
-- rate of that model's training window (skill > 0: the model beats the base rate). A "run" is one
-- retrain (model_as_of): the sessions it served and its mean over them. Empty until the model has run.
with decisive as (
    select
        session,
        model_as_of,
        trained_on_first,
        trained_on_last,
        is_break,
        p_break_decisive as p,
        base_break_decisive as base,
        least(greatest(p_break_decisive, 1e-15), 1 - 1e-15) as p_clipped,
        least(greatest(base_break_decisive, 1e-15), 1 - 1e-15) as base_clipped,
        -- mid-ranks (ties count half), as the Mann-Whitney form of ROC AUC needs
        rank() over (partition by session order by p_break_decisive)
            + (count(*) over (partition by session, p_break_decisive) - 1) / 2.0 as p_rank
    from {{ ref('stg_break_predictions') }}
    where is_decisive
),

folds as (
    select
        session as test_session,
        any_value(model_as_of) as model_as_of,
        any_value(trained_on_first) as trained_on_first,
        any_value(trained_on_last) as trained_on_last,
        count(*) as n_test,
        sum(is_break) as n_break,
        (sum(case when is_break = 1 then p_rank end) - sum(is_break) * (sum(is_break) + 1) / 2.0)
            / nullif(sum(is_break) * (count(*) - sum(is_break)), 0) as auc,
        -avg(is_break * ln(p_clipped) + (1 - is_break) * ln(1 - p_clipped)) as log_loss,
        -avg(is_break * ln(base_clipped) + (1 - is_break) * ln(1 - base_clipped)) as log_loss_base,
        avg((p - is_break) * (p - is_break)) as brier,
        avg((base - is_break) * (base - is_break)) as brier_base
    from decisive
    group by session
)

select
    'walk_forward/' || strftime(test_session, '%Y-%m-%d') as fold_id,
    'walk_forward' as scheme,
    model_as_of,
    test_session,
    trained_on_first,
    trained_on_last,
    n_test,
    n_break,
    auc,
    log_loss,
    log_loss_base,
    1 - log_loss / nullif(log_loss_base, 0) as log_loss_skill,
    brier,
    brier_base,
    1 - brier / nullif(brier_base, 0) as brier_skill,
    count(*) over run as folds_in_run,
    avg(auc) over run as run_mean_auc,
    avg(1 - brier / nullif(brier_base, 0)) over run as run_mean_brier_skill
from folds
window run as (partition by model_as_of)
order by test_session
