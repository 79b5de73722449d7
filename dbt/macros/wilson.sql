{#- Wilson score interval for a binomial share k/n (z = 1.645 for 90%); null when n = 0. -#}
{% macro wilson_bound(k, n, z, side) -%}
    case when {{ n }} > 0 then
        (
            ({{ k }}::double / {{ n }}) + {{ z }} * {{ z }} / (2.0 * {{ n }})
            {{ '-' if side == 'lower' else '+' }} {{ z }} * sqrt(
                ({{ k }}::double / {{ n }}) * (1 - {{ k }}::double / {{ n }}) / {{ n }}
                + {{ z }} * {{ z }} / (4.0 * {{ n }} * {{ n }})
            )
        ) / (1 + {{ z }} * {{ z }} / {{ n }})
    end
{%- endmacro %}
