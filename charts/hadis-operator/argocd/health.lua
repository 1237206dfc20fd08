-- Argo CD health check for serving.hadis.dev/DiffusionCascade.
-- Argo CD runs it with the live object in the global `obj` and reads the table it returns.
-- Install it under resource.customizations.health.serving.hadis.dev_DiffusionCascade in
-- argocd-cm (docs/operations.md). The states, in the order they are decided:
--   Progressing  no status yet, or status.observedGeneration behind metadata.generation
--                (the operator has not planned this spec), or workers still scaling
--   Degraded     Degraded=True: a profile problem (missing, invalid, not the models'), a
--                GPU budget that cannot meet the SLO, a refused object, pods waiting for
--                GPUs, or Prometheus unreadable (the last plan kept)
--   Healthy      Ready=True
--   Progressing  anything else (Ready not yet True)
local hs = {}

local function present(v)
  -- cjson decodes JSON null to a sentinel; Argo CD's decoder to nil
  return v ~= nil and type(v) ~= "userdata"
end

local function condition(status, kind)
  if not present(status) or not present(status.conditions) then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c)
  local reason = present(c.reason) and c.reason or ""
  local message = present(c.message) and c.message or ""
  if message == "" then
    return reason
  end
  return reason .. ": " .. message
end

local status = obj.status
local generation = (present(obj.metadata) and present(obj.metadata.generation)) and obj.metadata.generation or 0
local observed = (present(status) and present(status.observedGeneration)) and status.observedGeneration or 0

if not present(status) or observed < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to plan generation " .. tostring(generation)
  return hs
end

local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = text(degraded)
  return hs
end

local progressing = condition(status, "Progressing")
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = text(progressing)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready)
  local drift = condition(status, "ProfileDrift")
  if drift ~= nil and drift.status == "True" then
    hs.message = hs.message .. "; " .. text(drift)
  end
  return hs
end

hs.status = "Progressing"
hs.message = ready ~= nil and text(ready) or "no Ready condition yet"
return hs
