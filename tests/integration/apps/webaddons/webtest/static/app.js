console.log("webtest");
