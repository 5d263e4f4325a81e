-- One row per experience and contact channel it names (split from the comma list of every slot).
with responses as (

    select id_experience, canaux_typologie
    from staging.stg_responses
    where canaux_typologie is not null

),

split as (

    select distinct
        id_experience,
        trim(unnest(string_split(canaux_typologie, ','))) as canal
    from responses

)

select * from split
where canal <> ''
