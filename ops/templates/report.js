(function () {
  "use strict";
  var cards = Array.prototype.slice.call(document.querySelectorAll("#gallery .card"));
  var camera = document.getElementById("f-camera");
  var label = document.getElementById("f-label");
  var status = document.getElementById("f-status");
  var conf = document.getElementById("f-conf");
  var confValue = document.getElementById("f-conf-value");
  var visible = document.getElementById("visible-count");

  function apply() {
    var min = parseFloat(conf.value);
    var shown = 0;
    cards.forEach(function (card) {
      var p = parseFloat(card.getAttribute("data-p"));
      var keep = (!camera.value || card.getAttribute("data-camera") === camera.value) &&
        (!label.value || card.getAttribute("data-label") === label.value) &&
        (!status.value || card.getAttribute("data-status") === status.value) &&
        (min <= 0 || p >= min);
      card.hidden = !keep;
      if (keep) { shown += 1; }
    });
    confValue.textContent = min.toFixed(2);
    visible.textContent = String(shown);
  }

  [camera, label, status, conf].forEach(function (el) {
    el.addEventListener("input", apply);
    el.addEventListener("change", apply);
  });
  apply();
  document.documentElement.setAttribute("data-ready", "1");
})();
