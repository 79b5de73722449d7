{#- A stream value lies in [−1, 1] (null allowed: a stream whose tier is absent). -#}
{% test within_minus_one_and_one(model, column_name) %}
select {{ column_name }}
from {{ model }}
where abs({{ column_name }}) > 1
{% endtest %}
