{#- The listed share columns of every row sum to 1 (within `tolerance`) wherever they are not
    null (a row with no labelled outcome has null shares). Fails on each offending row. -#}
{% test shares_sum_to_one(model, columns, tolerance=1e-9) %}
select *
from {{ model }}
where {{ columns | join(' is not null and ') }} is not null
  and abs(({{ columns | join(' + ') }}) - 1.0) > {{ tolerance }}
{% endtest %}
