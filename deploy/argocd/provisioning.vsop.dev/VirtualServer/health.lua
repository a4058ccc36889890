-- Argo CD health check for provisioning.vsop.dev/VirtualServer (vsop).
-- Healthy: Ready=True and status.observedGeneration == metadata.generation.
-- Progressing: no status yet, an older generation observed, deleting, phase Waiting (held up by
--   something vsop retries on its own, e.g. a name not yet in DNS), or Ready=False with a reason
--   that means "in progress" (creating, installing, configuring, ...).
-- Suspended: powered off because spec.powerState says Off (phase PoweredOff).
-- Degraded: phase Failed, or Ready=False with any other reason (see the README's reason table).
local hs = {}

-- Keep in step with PROGRESS_REASONS in src/reconcile/engine/virtualserver.ts (a unit test compares them).
local progressReasons = {
  Provisioned = true,
  Resolved = true,
  Creating = true,
  PoweringOn = true,
  Installing = true,
  WaitingForInstall = true,
  Disconnecting = true,
  Configuring = true,
  PuppetRunning = true,
  PuppetRunQueued = true,
  Deleting = true,
  ConnectingToVCenter = true,
  Created = true,
  Installed = true,
  Disconnected = true,
  PoweringOff = true,
  Restarting = true,
  Resizing = true,
  Rebuilding = true,
  Adopting = true,
}

-- Keep in step with SUSPENDED_REASONS in src/reconcile/engine/virtualserver.ts (a unit test compares them).
local suspendedReasons = {
  PoweredOff = true,
}

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for vsop to pick up the VirtualServer"
  return hs
end

local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

local message = ""
if ready ~= nil and ready.message ~= nil then
  message = ready.message
end

if obj.metadata.deletionTimestamp ~= nil or status.phase == "Deleting" then
  hs.status = "Progressing"
  if message == "" then
    message = "Deleting"
  end
  hs.message = message
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  if observed == nil then
    hs.message = "Waiting for vsop to observe generation " .. generation
  else
    hs.message = "Waiting for vsop to observe generation " .. generation ..
      " (status is of generation " .. observed .. ")"
  end
  return hs
end

if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message
  return hs
end

if status.phase == "Waiting" then
  hs.status = "Progressing"
  if message == "" then
    message = "Waiting"
  end
  hs.message = message
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  if status.phase ~= nil then
    hs.message = "Phase " .. status.phase .. "; waiting for the Ready condition"
  else
    hs.message = "Waiting for the Ready condition"
  end
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end

if status.phase == "PoweredOff" or (ready.reason ~= nil and suspendedReasons[ready.reason]) then
  hs.status = "Suspended"
  hs.message = message
  return hs
end

if ready.reason ~= nil and progressReasons[ready.reason] then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = message
return hs
